"""tools/dump_proposals.py: sharded over 2 processes, merged, resumable, loadable by detectron2."""
import contextlib
import io
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import load_proposals_into_dataset
from detectron2.data.detection_utils import read_image

from model_helpers import build

DM = "configs/shapes/deepmask_R18_shapes.yaml"
# 30 proposals per image from two scales (multi-scale, at a test's cost)
TEST_OPTS = ["MODEL.DEEPMASK.TEST_TOPK", "30", "MODEL.DEEPMASK.TEST_SCALES", "[0.5, 1.0]"]


def _dump(repo_root, output, weights, *extra):
    proc = subprocess.run(
        [sys.executable, "tools/dump_proposals.py", "--config-file", DM, "--dataset",
         "shapes_val_mini", "--output", str(output), "--images-per-shard", "6", *extra,
         "MODEL.WEIGHTS", str(weights), *TEST_OPTS],
        cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_sharded_dump_is_complete_resumable_and_loadable(repo_root, tmp_path):
    """Bad input: resuming a proposal dump with another config or rewritten weights | refused (both
    compared by content)"""
    torch.manual_seed(0)
    model, _ = build(repo_root, DM, *TEST_OPTS)
    DetectionCheckpointer(model, str(tmp_path)).save("deepmask")
    weights, output = tmp_path / "deepmask.pth", tmp_path / "props.pkl"
    _dump(repo_root, output, weights, "--num-gpus", "2", "--masks")
    with open(output, "rb") as f:
        first = pickle.load(f)
    records = DatasetCatalog.get("shapes_val_mini")
    assert sorted(first["ids"]) == sorted(r["image_id"] for r in records)
    assert all(b.shape == (len(s), 4) for b, s in zip(first["boxes"], first["objectness_logits"]))
    assert all(0 < len(b) <= 30 for b in first["boxes"])
    loaded = load_proposals_into_dataset([dict(r) for r in records], str(output))
    assert len(loaded) == len(records)
    # The masks' COCO results (streamed shard by shard) load in pycocotools, one per proposal.
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(MetadataCatalog.get("shapes_val_mini").json_file)
        segm = gt.loadRes(str(tmp_path / "props.pkl.segm.json"))
    for image_id, boxes, logits in zip(first["ids"], first["boxes"], first["objectness_logits"]):
        results = sorted(segm.imgToAnns[image_id], key=lambda a: -a["score"])
        np.testing.assert_allclose([a["score"] for a in results], logits, rtol=1e-6)
        # Each box is its mask's tight box (pycocotools' box of the RLE, XYWH -> XYXY).
        tight = np.array([mask_util.toBbox(a["segmentation"]) for a in results])
        np.testing.assert_allclose(np.concatenate([tight[:, :2], tight[:, :2] + tight[:, 2:]], 1),
                                   boxes, atol=1e-3)
    # Whichever process and shard an image went to, its entry is what the model itself
    # proposes for that image, read by hand (one image of each shard).
    dumped = dict(zip(first["ids"], zip(first["boxes"], first["objectness_logits"])))
    model.load_state_dict(torch.load(weights, weights_only=False)["model"])
    model.eval()
    for record in records[::6]:
        image = read_image(record["file_name"], format="RGB")
        with torch.no_grad():
            own = model.propose(torch.as_tensor(image.transpose(2, 0, 1).copy()), top_k=30)
        boxes, logits = dumped[record["image_id"]]
        np.testing.assert_allclose(own.objectness_logits.numpy(), logits, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(own.proposal_boxes.tensor.numpy(), boxes, atol=1e-2)
    # Resume: the shards already written are reused, a lost one is recomputed identically.
    shards = sorted((tmp_path / "props.pkl.shards").glob("shard_*.pkl"))
    assert len(shards) == 4  # 20 images, 6 per shard
    # Kept shards are dated back a day: a rewrite, however fast, would date them now.
    day_ago = time.time_ns() - 86400 * 10**9
    for p in shards[1:]:
        os.utime(p, ns=(day_ago, day_ago))
    shards[0].unlink()
    output.unlink()
    # What a SIGKILL leaves half-written: atomic_open's temporaries, removed by the rerun.
    stale = [tmp_path / ".props.pkl.k3j2", tmp_path / ".props.pkl.segm.json.x1",
             tmp_path / "props.pkl.shards" / ".shard_00000.pkl.q9"]
    for path in stale:
        path.write_bytes(b"\x80partial")
    log = _dump(repo_root, output, weights, "--masks")
    assert "3 already done" in log
    assert not any(path.exists() for path in stale)
    assert all(p.stat().st_mtime_ns == day_ago for p in shards[1:])
    with open(output, "rb") as f:
        second = pickle.load(f)
    assert second["ids"] == first["ids"]
    for a, b in zip(first["boxes"], second["boxes"]):
        np.testing.assert_allclose(a, b, atol=1e-3)
    # Other settings refuse to mix with these shards.
    proc = subprocess.run(
        [sys.executable, "tools/dump_proposals.py", "--config-file", DM, "--dataset",
         "shapes_val_mini", "--output", str(output), "--images-per-shard", "5",
         "MODEL.WEIGHTS", str(weights)], cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode != 0 and "other settings" in proc.stderr
    # So do other weights written at the same path.
    torch.manual_seed(1)
    other, _ = build(repo_root, DM)
    DetectionCheckpointer(other, str(tmp_path)).save("deepmask")
    proc = subprocess.run(
        [sys.executable, "tools/dump_proposals.py", "--config-file", DM, "--dataset",
         "shapes_val_mini", "--output", str(output), "--images-per-shard", "6", "--masks",
         "MODEL.WEIGHTS", str(weights), *TEST_OPTS],
        cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode != 0 and "weights_sha256" in proc.stderr
