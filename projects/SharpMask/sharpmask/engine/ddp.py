"""DistributedDataParallel for models on CPU as well as on GPUs.

detectron2's `create_ddp_model` always passes `device_ids=[local_rank]`, which DDP rejects for a
CPU module; CPU training with several processes (gloo) needs `device_ids=None`.
"""
import contextlib
import os
from unittest import mock

import detectron2.engine.defaults as d2_defaults
from detectron2.engine.defaults import create_ddp_model


def create_device_aware_ddp_model(model, **kwargs):
    """`create_ddp_model` that leaves `device_ids` unset for a model whose parameters are on CPU."""
    first = next(model.parameters(), None)
    if first is not None and first.device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return create_ddp_model(model, **kwargs)


@contextlib.contextmanager
def device_aware_ddp():
    """Within this block, DefaultTrainer wraps CPU models in DDP correctly."""
    with mock.patch.object(d2_defaults, "create_ddp_model", create_device_aware_ddp_model):
        yield


@contextlib.contextmanager
def launch_environment(processes_per_machine, device):
    """Within this block, the processes that detectron2's `launch` starts (they inherit the
    environment) run on `device` as a multi-process job there should:

    - each gets an equal share of this machine's cores for torch's CPU work (OMP_NUM_THREADS),
      unless OMP_NUM_THREADS is set already. Each process would otherwise run as many threads
      as the machine has cores: on a 2-core CPU, 2 evaluation processes pasting masks ran ~8x
      slower per image than one (OpenMP threads spinning against each other). torchrun sets 1
      for the same reason; a share keeps the cores busy when there are fewer processes than
      cores.
    - on a CPU device (MODEL.DEVICE cpu), the machine's GPUs are hidden from them
      (CUDA_VISIBLE_DEVICES empty): `launch` picks NCCL and one GPU per process whenever CUDA
      is available, so CPU processes on a GPU machine would otherwise fail (NCCL rejects CPU
      tensors; a 1-GPU machine cannot start 2 processes).

    The parent's environment is restored on exit."""
    if processes_per_machine <= 1:
        yield
        return
    changes = {}
    if "OMP_NUM_THREADS" not in os.environ:
        changes["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes_per_machine))
    if device.split(":")[0] == "cpu":
        changes["CUDA_VISIBLE_DEVICES"] = ""
    with mock.patch.dict(os.environ, changes):
        yield
