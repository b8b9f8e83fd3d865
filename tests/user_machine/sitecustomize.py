"""Makes this Python look, to detectron2 and this project, as if it ran on a GPU machine, to
check that the test suite does not depend on the machine having no GPU
(`make test-user-machine`; docs/development.md).

Put this folder on PYTHONPATH: every Python process then sees `torch.cuda.is_available()` true
and `SIMULATED_GPUS` devices (default 1) with a name and a capability, as on a user's machine,
unless CUDA_VISIBLE_DEVICES is empty (which hides the GPUs of a real machine too). torch's own
modules still see the truth (their optimizers and autocast query CUDA for CPU work too).
Anything that really runs on the fake device fails, which is the point: a test must pick its
device itself.
"""
import os
import sys

if os.environ.get("CUDA_VISIBLE_DEVICES") != "":
    import torch

    _count = int(os.environ.get("SIMULATED_GPUS", "1"))
    _is_available, _device_count = torch.cuda.is_available, torch.cuda.device_count

    def _caller_is_torch():
        return sys._getframe(2).f_globals.get("__name__", "").startswith("torch")

    def is_available():
        return _is_available() if _caller_is_torch() else True

    def device_count():
        return _device_count() if _caller_is_torch() else _count

    def get_device_name(device=None):
        return "simulated GPU"

    def get_device_capability(device=None):
        return (9, 0)

    def synchronize(device=None):  # nothing runs on the fake device: nothing to wait for
        return None

    torch.cuda.is_available, torch.cuda.device_count = is_available, device_count
    torch.cuda.synchronize = synchronize
    torch.cuda.get_device_name, torch.cuda.get_device_capability = get_device_name, \
        get_device_capability
