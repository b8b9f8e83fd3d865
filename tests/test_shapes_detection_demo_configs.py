"""The detection demos' pieces: frozen modules, Fast R-CNN on precomputed proposals on shapes,
the proposal-file checks, masks for ground-truth boxes, and AP at high IoU thresholds against
pycocotools' own 10-threshold evaluation."""
import json
import pickle

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.layers import FrozenBatchNorm2d
from detectron2.structures import BoxMode
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from model_helpers import build, load_cfg, saved_deepmask
from sharpmask.engine import ConfigError, Trainer, check_config
from sharpmask.evaluation import ap_at_iou_thresholds, predict_masks_for_ground_truth
from proposal_file_helpers import hand_written_proposal_file, proposals_at_roi_heads
from test_refinemask import SMALL
from test_train_net import _train_net

FIXED = "configs/shapes/mask_rcnn_R18_FPN_refinemask_shapes.yaml"
MASK_RCNN_FIXED = "configs/shapes/mask_rcnn_R18_FPN_shapes_fixed_detector.yaml"
FAST = "configs/shapes/fast_rcnn_R18_FPN_shapes_proposals.yaml"
TINY = ["DATASETS.TRAIN", "('shapes_val_mini',)", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2", "INPUT.RANDOM_FLIP", "none"]


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_fixed_detector_trains_only_the_mask_head(repo_root, tmp_path):
    """The refinemask demo's config: backbone, RPN and box head stay as loaded; the RefineMask
    head and its semantic head change."""
    torch.manual_seed(0)
    model, _ = build(repo_root, FIXED, *SMALL)
    DetectionCheckpointer(model, str(tmp_path)).save("init")
    _train_net(repo_root, "--config-file", FIXED, *SMALL, *TINY, "DATASETS.TEST", "()",
               "MODEL.WEIGHTS", str(tmp_path / "init.pth"), "SOLVER.MAX_ITER", "2",
               "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "out"))
    before, after = _state(tmp_path / "init.pth"), _state(tmp_path / "out" / "model_final.pth")
    frozen = ("backbone.", "proposal_generator.", "roi_heads.box_head.",
              "roi_heads.box_predictor.")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    assert not [k for k in changed if k.startswith(frozen)]
    assert any(k.startswith("roi_heads.mask_head.") for k in changed)
    assert any(k.startswith("roi_heads.semantic_head.") for k in changed)


def test_frozen_batchnorm_and_unknown_module_names(repo_root):
    cfg = load_cfg(repo_root, FAST, "MODEL.RESNETS.NORM", "BN")
    model = Trainer.build_model(cfg)
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not norms and any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.modules())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.roi_heads.parameters())
    cfg = load_cfg(repo_root, FAST, "MODEL.FROZEN_MODULES", "['backbone', 'roi_heads.box_haed']")
    with pytest.raises(KeyError, match=r"box_haed.*top-level modules are .*'roi_heads'"):
        Trainer.build_model(cfg)


def test_fast_rcnn_on_shapes_proposals_trains_and_tests_top_k(repo_root, tmp_path):
    """train_net trains and tests the shapes Fast R-CNN on a proposal file; at test time it
    keeps one box per class per proposal, from the top 7."""
    proposals = tmp_path / "hand.pkl"
    hand_written_proposal_file(proposals, "shapes_val_mini")
    files = f"('{proposals}',)"
    _train_net(repo_root, "--config-file", FAST, *TINY, "MODEL.WEIGHTS", "",
               "DATASETS.TEST", "('shapes_val_mini',)", "DATASETS.PROPOSAL_FILES_TRAIN", files,
               "DATASETS.PROPOSAL_FILES_TEST", files, "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST",
               "7", "SOLVER.MAX_ITER", "1", "MODEL.DEVICE", "cpu",
               "OUTPUT_DIR", str(tmp_path / "out"))
    results = tmp_path / "out" / "inference" / "shapes_val_mini" / "coco_instances_results.json"
    with open(results) as f:
        detections = json.load(f)
    per_image = {}
    for d in detections:
        per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
    # Fast R-CNN keeps at most one box per class per proposal, from the top 7 proposals.
    assert detections and max(per_image.values()) <= 7 * 8


@pytest.mark.parametrize("top_k", [5, 1000])
def test_fast_rcnn_gets_the_files_top_k_boxes_scaled_to_the_resized_image(repo_root,
                                                                          tmp_path, top_k):
    """A hand-written proposal file: in training (images resized to a 256 short side) and at
    test time (320), the RoI heads receive each image's best `top_k` boxes of the file by
    objectness, in that order, times the resize factors; top_k 1000 is the control (all 12)."""
    path = tmp_path / "hand.pkl"
    by_id = hand_written_proposal_file(path, "shapes_val_mini")
    cfg = load_cfg(repo_root, FAST, *TINY, "INPUT.MIN_SIZE_TRAIN", "(256,)",
                   "INPUT.MAX_SIZE_TRAIN", "1000", "INPUT.MIN_SIZE_TEST", "320",
                   "INPUT.MAX_SIZE_TEST", "1000",
                   "DATASETS.PROPOSAL_FILES_TRAIN", f"('{path}',)",
                   "DATASETS.TEST", "('shapes_val_mini',)",
                   "DATASETS.PROPOSAL_FILES_TEST", f"('{path}',)",
                   "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN", str(top_k),
                   "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST", str(top_k))
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    train_batch = next(iter(Trainer.build_train_loader(cfg)))
    test_batch = next(iter(Trainer.build_test_loader(cfg, "shapes_val_mini")))
    for training, batch in ((True, train_batch), (False, test_batch)):
        model.train(training)
        received = proposals_at_roi_heads(model, batch)
        for x, proposals in zip(batch, received):
            boxes, logits = by_id[x["image_id"]]
            height, width = x["image"].shape[-2:]
            assert min(height, width) == (256 if training else 320)
            factors = np.array([width / x["width"], height / x["height"]] * 2, np.float32)
            expected = boxes[np.argsort(-logits)][:top_k] * factors
            assert len(proposals) == min(top_k, 12)
            np.testing.assert_allclose(proposals.proposal_boxes.tensor.numpy(), expected,
                                       rtol=1e-5, atol=1e-3)
            np.testing.assert_array_equal(proposals.objectness_logits.numpy(),
                                          np.sort(logits)[::-1][:top_k])


def test_proposal_files_are_checked(repo_root, tmp_path):
    """Bad input: MODEL.LOAD_PROPOSALS without proposal files, or with a missing one | refused at
    start"""
    cfg = load_cfg(repo_root, FAST)
    with pytest.raises(ConfigError, match="PROPOSAL_FILES_TRAIN needs one proposal file"):
        check_config(cfg)
    cfg = load_cfg(repo_root, FAST, "DATASETS.PROPOSAL_FILES_TRAIN", f"('{tmp_path}/a.pkl',)",
                   "DATASETS.PROPOSAL_FILES_TEST", f"('{tmp_path}/b.pkl',)")
    with pytest.raises(ConfigError, match=r"PROPOSAL_FILES_TRAIN: no such file .*a\.pkl"):
        check_config(cfg)


def _proposal_file(path, records, mode=BoxMode.XYXY_ABS, skip=0, nan_boxes=False,
                   nan_scores=False, edit=None):
    """Random XYXY proposals inside each image, in a file that says they are in `mode`;
    `edit(data)` -> what is written instead."""
    rng = np.random.default_rng(0)
    boxes, scores = [], []
    for r in records[skip:]:
        x0, y0 = rng.uniform(0, r["width"] / 2, 20), rng.uniform(0, r["height"] / 2, 20)
        xyxy = np.stack([x0, y0, x0 + rng.uniform(5, r["width"] / 2, 20),
                         y0 + rng.uniform(5, r["height"] / 2, 20)], 1)
        boxes.append(xyxy)  # XYXY boxes, labelled `mode`
        scores.append(rng.normal(size=20))
    if nan_boxes:
        boxes[1][3, 2] = np.nan
    if nan_scores:
        scores[2][0] = np.nan
    data = {"ids": [r["image_id"] for r in records[skip:]], "boxes": boxes,
            "objectness_logits": scores, "bbox_mode": mode}
    with open(path, "wb") as f:
        pickle.dump(edit(data) if edit else data, f)
    return str(path)


def _with(data, **changes):
    return {**data, **changes}


@pytest.mark.parametrize("fault,message", [
    ({}, None),
    ({"skip": 3}, r"has no proposals for 3 image\(s\) of shapes_val_mini"),
    ({"nan_boxes": True}, r"non-finite boxes or scores for 1 image"),
    ({"nan_scores": True}, r"non-finite boxes or scores for 1 image"),
    ({"mode": BoxMode.XYWH_ABS}, r"bbox_mode is XYWH_ABS but .* look like XYXY boxes"),
    ({"edit": lambda d: _with(d, boxes=d["boxes"][:-1])},
     r"has 20 ids but 19 box arrays and 20 score arrays"),
    ({"edit": lambda d: _with(d, objectness_logits=[np.append(d["objectness_logits"][0], 1.0)]
                              + d["objectness_logits"][1:])},
     r"image 1 has boxes of shape \(20, 4\) and scores of shape \(21,\)"),
    ({"mode": BoxMode.XYXY_REL}, r"bbox_mode .* is not BoxMode.XYXY_ABS or XYWH_ABS"),
    ({"edit": lambda d: _with(d, ids=[d["ids"][1]] + d["ids"][1:])},
     r"lists image ids more than once \(e.g. \['2'\]\)"),
    ({"edit": lambda d: list(d.values())}, r"holds a list; a proposal file is a dict"),
    ({"edit": lambda d: {k: v for k, v in d.items() if k != "boxes"}}, r"lacks \['boxes'\]")])
def test_proposal_file_contents_are_checked_at_start(repo_root, tmp_path, fault, message):
    """A test proposal file missing images, with NaN boxes or scores, with XYXY boxes
    labelled XYWH, with lengths or shapes that do not match, repeated ids, a relative bbox_mode
    or another layout is refused before training starts (not after it, at evaluation).
    Bad input: a proposal file (train or test) missing images, with NaN values, XYXY boxes
    labelled XYWH, mismatched lengths or shapes, repeated ids, a relative bbox_mode | refused at
    start, naming the file"""
    records = DatasetCatalog.get("shapes_val_mini")
    good = _proposal_file(tmp_path / "good.pkl", records)
    bad = _proposal_file(tmp_path / "bad.pkl", records, **fault)
    cfg = load_cfg(repo_root, FAST, "DATASETS.TRAIN", "('shapes_val_mini',)", "DATASETS.TEST",
                   "('shapes_val_mini',)", "DATASETS.PROPOSAL_FILES_TRAIN", f"('{good}',)",
                   "DATASETS.PROPOSAL_FILES_TEST", f"('{bad}',)")
    if message is None:
        check_config(cfg)
        return
    with pytest.raises(ConfigError, match=r"PROPOSAL_FILES_TEST: .*bad\.pkl.*" + message):
        check_config(cfg)


def test_high_iou_ap_matches_cocoeval_thresholds():
    """Detections = ground-truth masks eroded by 0-3 px: AP falls with the IoU threshold. The
    result must equal pycocotools' standard evaluation averaged over its thresholds .8-.95."""
    records = DatasetCatalog.get("shapes_val_mini")
    json_file = MetadataCatalog.get("shapes_val_mini").json_file
    gt = COCO(json_file)
    rng = np.random.default_rng(0)
    detections = []
    for ann in gt.loadAnns(gt.getAnnIds(iscrowd=False)):
        mask = gt.annToMask(ann)
        k = int(rng.integers(0, 4))
        if k:
            mask = cv2.erode(mask, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
        if not mask.any():
            continue
        rle = mask_util.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode()
        detections.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                           "segmentation": rle, "score": float(rng.uniform())})
    ids = [r["image_id"] for r in records]
    ours = ap_at_iou_thresholds(json_file, detections, ids)

    standard = COCOeval(gt, gt.loadRes(detections), "segm")
    standard.params.imgIds = sorted(ids)
    standard.evaluate()
    standard.accumulate()
    thresholds = np.round(standard.params.iouThrs, 2)
    high = np.isin(thresholds, [0.8, 0.85, 0.9, 0.95])
    precision = standard.eval["precision"][high][:, :, :, 0, -1]
    expected = 100 * precision[precision > -1].mean()
    assert ours == pytest.approx(expected, abs=1e-9)
    assert 5 < ours < 95  # the erosion makes the high thresholds discriminate
    assert ap_at_iou_thresholds(json_file, [], ids) == 0.0


@pytest.mark.parametrize("config", [FIXED, MASK_RCNN_FIXED])
def test_masks_for_ground_truth_boxes(repo_root, config):
    """Both mask heads give one full-resolution mask per non-crowd ground-truth box, with that
    box and class, in original image coordinates."""
    torch.manual_seed(0)
    model, cfg = build(repo_root, config, *SMALL)
    model.eval()
    records = [r for r in DatasetCatalog.get("shapes_val_mini") if r["annotations"]][:2]
    mapper = DatasetMapper(cfg, is_train=False)
    inputs = [mapper(r) for r in records]
    outputs = predict_masks_for_ground_truth(model, inputs, records)
    for record, output in zip(records, outputs):
        annotations = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
        instances = output["instances"]
        expected = torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                                 for a in annotations], dtype=torch.float32)
        torch.testing.assert_close(instances.pred_boxes.tensor, expected, atol=1e-3, rtol=0)
        assert instances.pred_classes.tolist() == [a["category_id"] for a in annotations]
        assert instances.pred_masks.shape == (len(annotations), record["height"],
                                              record["width"])


def test_deepmask_trunk_starts_the_class_agnostic_mask_rcnn(repo_root, tmp_path):
    """The DeepMask trunk written as an FPN bottom-up ResNet loads into the open-world Mask
    R-CNN: stem and res2-res4 equal DeepMask's, BatchNorm statistics included."""
    from sharpmask.engine.checkpoint import save_deepmask_trunk_as_fpn_bottom_up

    deepmask, weights = saved_deepmask(repo_root, tmp_path)
    save_deepmask_trunk_as_fpn_bottom_up(weights, str(tmp_path / "t.pth"))
    detector, cfg = build(repo_root, "configs/shapes/mask_rcnn_R18_FPN_shapes_class_agnostic.yaml")
    DetectionCheckpointer(detector).load(str(tmp_path / "t.pth"))
    theirs = deepmask.state_dict()
    ours = {k: v for k, v in detector.state_dict().items()
            if k.startswith("backbone.bottom_up.") and ".res5." not in k}
    assert len(ours) > 50
    for key, value in ours.items():
        assert torch.equal(value, theirs["trunk.resnet." + key[len("backbone.bottom_up."):]]), key
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1 and cfg.MODEL.MASK_ON
    with pytest.raises(ValueError, match="no DeepMask trunk"):
        torch.save({"model": {"x": torch.zeros(1)}}, tmp_path / "other.pth")
        save_deepmask_trunk_as_fpn_bottom_up(str(tmp_path / "other.pth"), str(tmp_path / "o.pth"))
