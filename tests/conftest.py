import importlib.metadata
import os
import pathlib
import platform
import shutil
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
# The world every test assumes, whatever this machine has, set before detectron2 registers
# its datasets (and inherited by the subprocesses tests start): generated datasets in the
# repo's git-ignored ./datasets, whatever the working directory or a user's
# $SHARPMASK_DATASETS; no COCO (an empty folder), even on a machine that has COCO under
# $DETECTRON2_DATASETS or ./datasets. A test that needs COCO files writes its own.
os.environ["SHARPMASK_DATASETS"] = str(REPO / "datasets")
NO_COCO = tempfile.mkdtemp(prefix="sharpmask-tests-no-coco-")
os.environ["DETECTRON2_DATASETS"] = NO_COCO

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
    for name in ("detectron2", "torchvision", "numpy", "opencv-contrib-python-headless",
                 "pycocotools", "Pillow", "fvcore", "matplotlib"):
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
        f"CUDA available: {torch.cuda.is_available()} (tests pick their device themselves); "
        f"COCO for tests: none (DETECTRON2_DATASETS={NO_COCO}, empty)",
    ]


def pytest_unconfigure(config):
    shutil.rmtree(NO_COCO, ignore_errors=True)


@pytest.fixture(scope="session")
def repo_root():
    return REPO
