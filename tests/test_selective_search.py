"""Selective Search as a proposal source: OpenCV's implementation behind a detectron2
meta-architecture, on a drawn image, through the config checks and tools/dump_proposals.py."""
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, pairwise_iou

from model_helpers import load_cfg
from sharpmask.engine import ConfigError, check_config

SS = "configs/shapes/selective_search_shapes.yaml"
RECTANGLES = [(20, 30, 110, 90), (150, 20, 300, 140), (40, 150, 90, 220), (200, 170, 290, 230)]
COLOURS = [(200, 40, 40), (40, 160, 60), (30, 60, 200), (230, 210, 40)]


def _drawn_image():
    """(240, 320, 3) uint8 RGB: flat-colour rectangles (XYXY) on a plain grey background."""
    image = np.full((240, 320, 3), 128, np.uint8)
    for (x0, y0, x1, y1), colour in zip(RECTANGLES, COLOURS):
        image[y0:y1, x0:x1] = colour
    return image


def _proposals(model, image_rgb, height=None, width=None):
    tensor = torch.as_tensor(np.ascontiguousarray(image_rgb.transpose(2, 0, 1)))
    x = {"image": tensor, "height": height or image_rgb.shape[0],
         "width": width or image_rgb.shape[1]}
    with torch.no_grad():
        return model([x])[0]["proposals"]


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_each_drawn_rectangle_gets_a_proposal(repo_root, mode):
    """Each rectangle is found at IoU >= 0.9, also when the image is searched at half size
    (boxes scaled back to the original), and in BGR as in RGB; proposals are ranked."""
    model = build_model(load_cfg(repo_root, SS, "MODEL.SELECTIVE_SEARCH.MODE", mode)).eval()
    image = _drawn_image()
    truth = Boxes(torch.tensor(RECTANGLES, dtype=torch.float32))
    proposals = _proposals(model, image)
    assert 4 < len(proposals) <= 2000 and proposals.image_size == (240, 320)
    logits = proposals.objectness_logits
    assert bool((logits[:-1] > logits[1:]).all())
    best = pairwise_iou(truth, proposals.proposal_boxes).max(dim=1).values
    assert bool((best >= 0.9).all()), best
    half = np.ascontiguousarray(image[::2, ::2])
    scaled = _proposals(model, half, height=240, width=320)
    best = pairwise_iou(truth, scaled.proposal_boxes).max(dim=1).values
    assert scaled.image_size == (240, 320) and bool((best >= 0.9).all()), best
    model.input_format = "BGR"
    bgr = _proposals(model, np.ascontiguousarray(image[:, :, ::-1]))
    torch.testing.assert_close(bgr.proposal_boxes.tensor, proposals.proposal_boxes.tensor)


def test_config_mistakes_are_named_at_start(repo_root):
    """Bad input: an unknown Selective Search mode, or training Selective Search | refused at
    start"""
    cfg = load_cfg(repo_root, SS, "MODEL.SELECTIVE_SEARCH.MODE", "fastest")
    with pytest.raises(ConfigError, match=r"MODE = 'fastest': must be one of \('fast'"):
        check_config(cfg)
    with pytest.raises(ConfigError, match="SelectiveSearch has nothing to train"):
        check_config(load_cfg(repo_root, SS), training=True)


def test_dump_in_two_processes_is_what_the_model_proposes(repo_root, tmp_path):
    """tools/dump_proposals.py, 2 CPU processes: every image of the dataset, each with the
    boxes Selective Search gives it (one strategy, at most 300, images at a 128 px short
    side to keep the test short)."""
    opts = ["MODEL.SELECTIVE_SEARCH.MODE", "single", "MODEL.SELECTIVE_SEARCH.MAX_PROPOSALS",
            "300", "INPUT.MIN_SIZE_TEST", "128"]
    output = tmp_path / "ss.pkl"
    proc = subprocess.run([sys.executable, "tools/dump_proposals.py", "--config-file", SS,
                           "--dataset", "shapes_val_mini", "--output", str(output),
                           "--images-per-shard", "5", "--num-gpus", "2", *opts],
                          cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "s per image in each of 2 process(es)" in proc.stdout
    with open(output, "rb") as f:
        dumped = pickle.load(f)
    records = DatasetCatalog.get("shapes_val_mini")
    assert sorted(dumped["ids"]) == sorted(r["image_id"] for r in records)
    from sharpmask.data.validation import CheckedDatasetMapper
    cfg = load_cfg(repo_root, SS, *opts)
    model, mapper = build_model(cfg).eval(), CheckedDatasetMapper(cfg, is_train=False)
    index = {i: k for k, i in enumerate(dumped["ids"])}
    for record in records[::7]:
        with torch.no_grad():
            own = model([mapper(record)])[0]["proposals"]
        k = index[record["image_id"]]
        assert 0 < len(own) <= 300
        np.testing.assert_allclose(dumped["boxes"][k], own.proposal_boxes.tensor.numpy(),
                                   atol=1e-3)
