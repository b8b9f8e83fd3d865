"""The detectron2 we install: importable, with metadata, without the cp310 extension."""
import importlib.metadata
import importlib.util
import os

import detectron2
import pytest


def test_detectron2_has_metadata():
    assert importlib.metadata.version("detectron2") == detectron2.__version__
    assert importlib.metadata.version("sharpmask")


def test_repacked_wheel_left_no_foreign_files():
    summary = importlib.metadata.metadata("detectron2")["Summary"] or ""
    if "repacked" not in summary:
        pytest.skip("detectron2 was not installed by tools/install_detectron2.py")
    package_dir = os.path.dirname(detectron2.__file__)
    assert not [f for f in os.listdir(package_dir) if f.startswith("_C")]
    site = os.path.dirname(package_dir)
    spec = importlib.util.find_spec("tools")
    assert spec is None or not (spec.origin or "").startswith(site)
