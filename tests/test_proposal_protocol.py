"""The comparison protocol's box NMS and top k against a slow greedy NMS written out here."""
import pickle
import subprocess
import sys

import numpy as np
import pytest
from detectron2.structures import BoxMode

from sharpmask.data.proposal_protocol import nms_top_k


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _greedy_by_hand(boxes, scores, threshold, top_k):
    """Visit proposals by decreasing score (ties in file order); keep one unless it overlaps
    a kept one by more than `threshold`."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if threshold >= 1.0 or all(_iou(boxes[i], boxes[j]) <= threshold for j in kept):
            kept.append(i)
    return kept[:top_k]


def _proposals(rng, n):
    corners = rng.uniform(0, 200, (n, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 60, (n, 2))], 1)
    scores = rng.normal(size=n).round(1)  # rounded: many ties
    return boxes.astype(np.float32), scores.astype(np.float32)


@pytest.mark.parametrize("threshold, top_k", [(0.5, 1000), (0.7, 40), (1.0, 25), (0.3, 0)])
def test_nms_top_k_is_greedy_nms_by_score_then_the_first_k(threshold, top_k):
    rng = np.random.default_rng(int(threshold * 10) + top_k)
    boxes, scores = _proposals(rng, 300)
    kept = nms_top_k(boxes, scores, threshold, top_k).tolist()
    assert kept == _greedy_by_hand(boxes.tolist(), scores.tolist(), threshold, top_k)
    if threshold < 1.0 and top_k:
        assert 0 < len(kept) < 300


def test_filter_command_rewrites_every_image(repo_root, tmp_path):
    """XYWH input, an image without proposals: the output is XYXY, per image the protocol's
    choice, best first."""
    rng = np.random.default_rng(0)
    per_image = [_proposals(rng, n) for n in (50, 0, 120)]
    source = tmp_path / "in.pkl"
    with open(source, "wb") as f:
        pickle.dump({"ids": [7, 8, 9], "bbox_mode": BoxMode.XYWH_ABS,
                     "boxes": [BoxMode.convert(b, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
                               for b, _ in per_image],
                     "objectness_logits": [s for _, s in per_image]}, f)
    proc = subprocess.run([sys.executable, "tools/filter_proposals.py", "--nms", "0.6",
                           "--top-k", "20", str(source), str(tmp_path / "out.pkl")],
                          cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 images, 170 -> " in proc.stdout
    with open(tmp_path / "out.pkl", "rb") as f:
        out = pickle.load(f)
    assert out["ids"] == [7, 8, 9] and out["bbox_mode"] == BoxMode.XYXY_ABS
    for (boxes, scores), got_boxes, got_scores in zip(per_image, out["boxes"],
                                                      out["objectness_logits"]):
        kept = _greedy_by_hand(boxes.tolist(), scores.tolist(), 0.6, 20)
        np.testing.assert_allclose(got_boxes, boxes[kept].reshape(-1, 4), atol=1e-4)
        np.testing.assert_array_equal(got_scores, scores[kept])
