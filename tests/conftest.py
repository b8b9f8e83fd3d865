import importlib.metadata
import os
import pathlib
import platform

REPO = pathlib.Path(__file__).resolve().parents[1]
# Generated datasets live in the repo's git-ignored ./datasets, whatever the working directory.
os.environ.setdefault("SHARPMASK_DATASETS", str(REPO / "datasets"))

import pytest  # noqa: E402
import torch  # noqa: E402

import sharpmask  # noqa: E402,F401  (registers the datasets)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def pytest_report_header(config):
    """What the run ran on, printed before the tests, so that a red run names its machine."""
    versions = []
    for name in ("detectron2", "torchvision", "numpy", "opencv-python-headless", "pycocotools",
                 "Pillow", "fvcore", "matplotlib"):
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    return [
        f"machine: {_cpu_model()}, {os.cpu_count()} cores, {platform.machine()}",
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"(CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads)",
        ", ".join(versions),
    ]


@pytest.fixture(scope="session")
def repo_root():
    return REPO
