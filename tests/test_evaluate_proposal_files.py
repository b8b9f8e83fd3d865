"""Proposal files of any method scored by our evaluator (tools/evaluate_proposals.py): the
same recall as pycocotools on the same proposals, and clear errors for unusable entries."""
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from pycocotools.coco import COCO

from coco_helpers import (SIX, assert_matches_cocoeval, gt_masks, perturbed_proposals,
                          reference_coco_recall, results_list)
from sharpmask.evaluation import evaluate_proposal_file

DATASET = "shapes_val_mini"


@pytest.fixture(scope="module")
def perturbed_results():
    """COCO results with masks around shapes_val_mini's objects (exact, shifted, dilated,
    eroded, merged, random, empty), as an outside method would write them."""
    json_file = MetadataCatalog.get(DATASET).json_file
    DatasetCatalog.get(DATASET)  # generated on first use
    coco, rng = COCO(json_file), np.random.default_rng(11)
    results = []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        masks, scores = perturbed_proposals(gt_masks(coco, image_id), info["height"],
                                            info["width"], rng)
        results += results_list(image_id, masks, scores)
    return json_file, results, sorted(coco.imgs)


def test_mask_results_file_matches_cocoeval(perturbed_results, tmp_path):
    json_file, results, ids = perturbed_results
    path = tmp_path / "segm.json"
    path.write_text(json.dumps(results))
    metrics = evaluate_proposal_file(DATASET, segm_file=str(path), output_dir=str(tmp_path / "o"))
    assert 0 < metrics["segm"]["AR@10"] < 100
    assert_matches_cocoeval(metrics, json_file, results, ids)
    assert (tmp_path / "o" / "proposal_metrics.json").is_file()


def test_box_proposal_file_matches_cocoeval(perturbed_results, tmp_path):
    """detectron2's pickle (XYXY boxes, scores in no order; one image with none)."""
    json_file, results, ids = perturbed_results
    by_image = {i: [r for r in results if r["image_id"] == i] for i in ids}
    by_image[ids[0]] = []
    boxes = [np.array([BoxMode.convert(r["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
                       for r in by_image[i]], np.float32).reshape(-1, 4) for i in ids]
    scores = [np.array([r["score"] for r in by_image[i]], np.float32) for i in ids]
    path = tmp_path / "boxes.pkl"
    with open(path, "wb") as f:
        pickle.dump({"ids": ids, "boxes": boxes, "objectness_logits": scores,
                     "bbox_mode": BoxMode.XYXY_ABS}, f)
    metrics = evaluate_proposal_file(DATASET, box_file=str(path))
    assert set(metrics) == {"bbox"} and 0 < metrics["bbox"]["AR@100"] < 100
    kept = [r for i in ids for r in by_image[i]]
    reference = reference_coco_recall(json_file, kept, ids, "bbox")
    for name, value in zip(SIX, reference.stats[6:12]):
        assert metrics["bbox"][name] == pytest.approx(100 * value, abs=0.01), name


@pytest.mark.parametrize("fault, message", [
    (lambda r: r[3].update(score=float("nan")), r"entry 3: score nan is not a finite number"),
    (lambda r: r[5]["segmentation"].update(size=[7, 9]), r"entry 5: mask size \[7, 9\]"),
    (lambda r: r[2].update(image_id=-4), r"entry 2: image_id -4 is not in the dataset"),
    (lambda r: r[1].pop("segmentation"), r"entry 1 lacks image_id, segmentation or score"),
])
def test_unusable_results_are_named(perturbed_results, tmp_path, fault, message):
    """Bad input: COCO results with a NaN score, a mask of another size, an unknown image or a
    missing field | refused, naming the file and the entry"""
    _, results, _ = perturbed_results
    broken = json.loads(json.dumps(results[:10]))
    fault(broken)
    path = tmp_path / "segm.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=rf"segm\.json: {message}"):
        evaluate_proposal_file(DATASET, segm_file=str(path))


def test_box_file_missing_images_is_refused(tmp_path):
    """Bad input: a proposal file lacking images of the dataset it is evaluated on | refused, with
    how many"""
    path = tmp_path / "few.pkl"
    first = DatasetCatalog.get(DATASET)[0]["image_id"]
    with open(path, "wb") as f:
        pickle.dump({"ids": [first], "boxes": [np.zeros((1, 4), np.float32)],
                     "objectness_logits": [np.zeros(1, np.float32)]}, f)
    with pytest.raises(ValueError, match=r"few\.pkl has no proposals for 19 image"):
        evaluate_proposal_file(DATASET, box_file=str(path))


def test_command_prints_the_recall_table(perturbed_results, repo_root, tmp_path):
    _, results, _ = perturbed_results
    path = tmp_path / "segm.json"
    path.write_text(json.dumps(results))
    proc = subprocess.run([sys.executable, "tools/evaluate_proposals.py", "--dataset", DATASET,
                           "--segm", str(path), "--seen-categories", "ellipse", "rectangle"],
                          cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for task in ("segm", "segm_seen", "segm_unseen", "bbox"):
        assert f"{task} recall (%) on {DATASET}:" in proc.stdout
    assert "AR@100" in proc.stdout
