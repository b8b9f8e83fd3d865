"""Fast R-CNN at several numbers of proposals in one pass (make detect-demo's AP-against-count
curve) equals detectron2's own inference run once per count with
DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST. Every detection is kept (no score threshold, no cap
per image), so that no CPU's float32 rounding of a box head run on 30 rows instead of 4 can
move a detection across a cut-off."""
import pickle

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import BoxMode

from model_helpers import load_cfg
from sharpmask.engine import Trainer
from sharpmask.evaluation.proposal_count_sweep import (detections_at_proposal_counts,
                                                       evaluate_at_proposal_counts)

FAST = "configs/shapes/fast_rcnn_R18_FPN_shapes_proposals.yaml"
DATASET = "shapes_val_mini"
COUNTS = (1, 4, 30)


def _proposals_around_objects(path):
    """Each object's box, jittered by up to 2 px, and 20 random boxes, with random logits: a
    random box head (deltas near 0) then detects each object in every class, so box AP is above 0
    and grows with the number of proposals kept."""
    rng = np.random.default_rng(0)
    data = {"ids": [], "boxes": [], "objectness_logits": [], "bbox_mode": BoxMode.XYXY_ABS}
    for r in DatasetCatalog.get(DATASET):
        objects = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                            for a in r["annotations"]], np.float32).reshape(-1, 4)
        half = np.array([r["width"], r["height"]]) / 2
        corner = rng.uniform(0, half, (20, 2))
        noise = np.concatenate([corner, corner + rng.uniform(8, half, (20, 2))], 1)
        boxes = np.concatenate([objects + rng.uniform(-2, 2, objects.shape), noise])
        data["ids"].append(r["image_id"])
        data["boxes"].append(boxes.astype(np.float32))
        data["objectness_logits"].append(rng.normal(size=len(boxes)).astype(np.float32))
    with open(path, "wb") as f:
        pickle.dump(data, f)


@pytest.fixture(scope="module")
def fast_rcnn(repo_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "proposals.pkl"
    _proposals_around_objects(path)
    cfg = load_cfg(repo_root, FAST, "DATASETS.TEST", f"('{DATASET}',)",
                   "DATASETS.PROPOSAL_FILES_TEST", f"('{path}',)", "DATALOADER.NUM_WORKERS", "0",
                   "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "1000")
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()
    return cfg, model


def _with_top_k(cfg, k):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST = k
    return cfg


def test_detections_equal_detectron2_run_once_per_count(fast_rcnn):
    cfg, model = fast_rcnn
    batches = {k: list(Trainer.build_test_loader(_with_top_k(cfg, k), DATASET))[:3]
               for k in COUNTS}
    checked = 0
    with torch.no_grad():
        for i, inputs in enumerate(batches[max(COUNTS)]):
            swept = detections_at_proposal_counts(model, inputs, COUNTS)
            for k in COUNTS:
                assert len(batches[k][i][0]["proposals"]) == min(k, len(inputs[0]["proposals"]))
                ours, theirs = swept[k][0]["instances"], model(batches[k][i])[0]["instances"]
                assert len(ours) == len(theirs) > 0
                np.testing.assert_allclose(ours.pred_boxes.tensor, theirs.pred_boxes.tensor,
                                           rtol=0, atol=1e-3)
                np.testing.assert_allclose(ours.scores, theirs.scores, rtol=0, atol=1e-5)
                assert torch.equal(ours.pred_classes, theirs.pred_classes)
                checked += 1
    assert checked == 3 * len(COUNTS)


def test_box_ap_equals_detectron2_evaluation_per_count(fast_rcnn, tmp_path):
    cfg, model = fast_rcnn
    evaluators = {k: COCOEvaluator(DATASET, tasks=("bbox",), distributed=False,
                                   output_dir=str(tmp_path / f"top{k}")) for k in COUNTS}
    swept = evaluate_at_proposal_counts(cfg, model, DATASET, evaluators)
    for k in COUNTS:
        evaluator = COCOEvaluator(DATASET, tasks=("bbox",), distributed=False)
        expected = Trainer.test(_with_top_k(cfg, k), model, evaluator)["bbox"]
        assert swept[k]["bbox"] == pytest.approx(expected, abs=1e-3, nan_ok=True)
    aps = [swept[k]["bbox"]["AP"] for k in COUNTS]
    assert 0 < aps[0] < aps[1] < aps[2], aps  # measured: 0.14, 1.5, 4.1


def test_refuses_a_model_with_its_own_proposal_generator(repo_root):
    cfg = load_cfg(repo_root, "configs/shapes/faster_rcnn_R18_FPN_shapes.yaml")
    model = Trainer.build_model(cfg)
    with pytest.raises(ValueError, match="precomputed proposals"):
        evaluate_at_proposal_counts(cfg, model, DATASET, {1: None})
