"""Makes this Python believe it runs on a GPU machine, to check that the test suite does not
depend on the machine having no GPU (`make test-user-machine`; docs/development.md).

Put this folder on PYTHONPATH: every Python process then sees `torch.cuda.is_available()` true
and `SIMULATED_GPUS` devices (default 1), as on a user's machine, unless CUDA_VISIBLE_DEVICES
is empty (which hides the GPUs of a real machine too). Anything that really runs on the fake
device fails, which is the point: a test must pick its device itself.
"""
import os

if os.environ.get("CUDA_VISIBLE_DEVICES") != "":
    import torch

    _count = int(os.environ.get("SIMULATED_GPUS", "1"))
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: _count
