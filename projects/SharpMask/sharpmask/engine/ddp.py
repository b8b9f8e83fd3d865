"""DistributedDataParallel for models on CPU as well as on GPUs.

detectron2's `create_ddp_model` always passes `device_ids=[local_rank]`, which DDP rejects for a
CPU module; CPU training with several processes (gloo) needs `device_ids=None`.
"""
import contextlib
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
