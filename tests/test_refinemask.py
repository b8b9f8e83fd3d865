"""RefineMask: stage shapes, the BAR loss against a direct computation, boundary-only
refinement, training, full-resolution inference, and the COCO config on shapes data."""
import math

import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from model_helpers import build, load_cfg
from sharpmask.modeling.refinemask import bar_loss, boundary_band
from test_detection_configs import ON_SHAPES
from test_train_net import _iterations, _train_net
from training_checks import assert_falls, training_seed

RM = "configs/shapes/mask_rcnn_R18_FPN_refinemask_shapes.yaml"
SMALL = ["INPUT.MIN_SIZE_TRAIN", "(256,)", "INPUT.MAX_SIZE_TRAIN", "384",
         "INPUT.MIN_SIZE_TEST", "256", "INPUT.MAX_SIZE_TEST", "384",
         "INPUT.RANDOM_FLIP", "none"]  # the same batch whatever ran before (flips use numpy)


def _band_by_search(mask, width):
    """Pixels with a pixel of the other value within Chebyshev distance `width`."""
    n, h, w = mask.shape
    out = torch.zeros_like(mask)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                window = mask[i, max(0, y - width):y + width + 1, max(0, x - width):x + width + 1]
                out[i, y, x] = bool((window != mask[i, y, x]).any())
    return out


def _bce(logit, target):
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_boundary_band_matches_a_neighbourhood_search():
    torch.manual_seed(0)
    masks = torch.rand(3, 13, 11) > 0.6
    masks[0] = False
    masks[1, 2:9, 3:8] = True
    for width in (1, 2):
        assert torch.equal(boundary_band(masks, width), _band_by_search(masks, width))


def test_bar_loss_against_a_direct_computation():
    """A hand-made 2-stage-per-kind pair: stages of 4, 8, 16, 32 px; a square target and
    predictions shifted from it; pixel-by-pixel BCE, bands found by neighbourhood search."""
    torch.manual_seed(1)
    sizes = [4, 8, 16, 32]
    targets, logits = [], []
    for s in sizes:
        t = torch.zeros(1, s, s)
        t[0, s // 4:3 * s // 4, s // 4:s // 2 + s // 8] = 1.0
        targets.append(t)
        logits.append(torch.randn(1, s, s) * 2 + (t.roll(1, dims=2) - 0.5) * 4)
    weights = [0.25, 0.5, 0.75, 1.0]
    total, per_stage = bar_loss(logits, targets, weights, full_stages=2, width=2)
    expected = []
    for k, s in enumerate(sizes):
        pixels = [(y, x) for y in range(s) for x in range(s)]
        if k >= 2:
            previous = torch.nn.functional.interpolate(
                logits[k - 1][:, None], size=(s, s), mode="bilinear", align_corners=False)[:, 0]
            band = _band_by_search(targets[k] > 0.5, 2) | _band_by_search(previous > 0, 2)
            pixels = [(y, x) for y, x in pixels if band[0, y, x]]
            assert 0 < len(pixels) < s * s
        losses = [_bce(logits[k][0, y, x].item(), targets[k][0, y, x].item()) for y, x in pixels]
        expected.append(sum(losses) / len(losses))
    for got, want in zip(per_stage, expected):
        assert got.item() == pytest.approx(want, rel=1e-5)
    assert total.item() == pytest.approx(sum(w * e for w, e in zip(weights, expected)), rel=1e-5)


def _batch(cfg, count=2):
    records = [d for d in DatasetCatalog.get("shapes_val_mini") if d["annotations"]][:count]
    return [DatasetMapper(cfg, is_train=True)(r) for r in records]


def test_stage_shapes_and_boundary_only_refinement(repo_root):
    torch.manual_seed(0)
    model, cfg = build(repo_root, RM, *SMALL)
    model.eval()
    head = model.roi_heads.mask_head
    image = _batch(cfg, 1)[0]["image"]
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        semantic_features, semantic_logits = model.roi_heads.semantic_head(features["p2"])
        boxes = [Boxes(torch.tensor([[10.0, 20.0, 90.0, 120.0], [50.0, 40.0, 70.0, 60.0]]))]
        pooled = model.roi_heads.mask_pooler([features[f] for f in
                                              model.roi_heads.mask_in_features], boxes)
        classes = torch.tensor([0, 3])
        raw = head.stages(pooled, boxes, classes, semantic_features, semantic_logits, False)
        merged = head.stages(pooled, boxes, classes, semantic_features, semantic_logits, True)
    assert semantic_logits.shape[-2:] == features["p2"].shape[-2:]
    assert [tuple(s.shape) for s in raw] == [(2, 14, 14), (2, 28, 28), (2, 56, 56),
                                             (2, 112, 112)]
    for k in (0, 1):
        torch.testing.assert_close(raw[k], merged[k])
    for k in (2, 3):
        up = torch.nn.functional.interpolate(merged[k - 1][:, None], scale_factor=2,
                                             mode="bilinear", align_corners=False)[:, 0]
        band = boundary_band(up > 0, 2)
        assert band.any() or (up > 0).all() or (up <= 0).all()
        torch.testing.assert_close(merged[k][~band], up[~band])
        if k == 2:  # same inputs as the raw stage (stage 3's differ: its input was merged)
            torch.testing.assert_close(merged[k][band], raw[k][band])


@pytest.mark.training
def test_training_decreases_losses_and_inference_gives_full_resolution_masks(repo_root):
    """The RoI heads (semantic head included) trained on fixed backbone features with the
    ground-truth boxes as proposals: the BAR and semantic losses fall; then the detector's
    output masks are pasted at the image's full resolution."""
    torch.manual_seed(training_seed())
    model, cfg = build(repo_root, RM, *SMALL)
    batch = _batch(cfg)
    images = model.preprocess_image(batch)
    targets = [x["instances"] for x in batch]
    with torch.no_grad():
        features = model.backbone(images.tensor)
    proposals = [Instances(t.image_size, proposal_boxes=t.gt_boxes,
                           objectness_logits=torch.ones(len(t))) for t in targets]
    optimizer = torch.optim.AdamW(model.roi_heads.parameters(), lr=1e-3)
    history = []
    model.train()
    with EventStorage():
        for _ in range(25):
            _, losses = model.roi_heads(images, features, proposals, targets)
            history.append({k: v.item() for k, v in losses.items()})
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    # Limits from tools/test_margins.py (README, Tests): worst ratios 0.85 (loss_mask) and 0.23
    # (loss_semantic) over 5 seeds, 1 and 2 threads and two kernel paths; the run reported
    # from an AVX-512 machine ended at 0.90 (last step alone). loss_mask starts at 2.5 x log 2
    # and is not monotone (the band of the finer stages moves with the prediction).
    assert_falls("refinemask", history, "loss_mask", 0.95)
    assert_falls("refinemask", history, "loss_semantic", 0.5)
    model.eval()
    height, width = batch[0]["height"], batch[0]["width"]
    with torch.no_grad():
        result = model([{"image": batch[0]["image"], "height": height, "width": width}])
        instances = result[0]["instances"]
        assert len(instances) > 0
        assert tuple(instances.pred_masks.shape) == (len(instances), height, width)
        raw, _ = model.roi_heads(images, features, proposals)
    assert tuple(raw[0].pred_masks.shape[1:]) == (1, 112, 112)


def test_coco_config_trains_one_iteration_on_shapes(repo_root, tmp_path):
    log = _train_net(repo_root, "--config-file", "configs/mask_rcnn_R50_FPN_refinemask_1x.yaml",
                     *ON_SHAPES, "OUTPUT_DIR", str(tmp_path / "o"))
    assert "loss_semantic" in log and _iterations(tmp_path / "o") == [0]


def test_wrong_mask_head_is_refused(repo_root):
    cfg = load_cfg(repo_root, RM, "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead")
    from detectron2.modeling import build_model
    with pytest.raises(ValueError, match="RefineMaskHead"):
        build_model(cfg)


def test_semantic_targets_from_polygons_bitmasks_and_empty_images():
    """The union of an image's masks, as the covered fraction of each 4 x 4 cell of the padded
    image; polygon and bitmask annotations agree, and an image without objects is all zero."""
    from detectron2.structures import BitMasks, PolygonMasks

    from sharpmask.modeling.refinemask import union_mask_targets
    square = [[[4.0, 4.0, 12.0, 4.0, 12.0, 10.0, 4.0, 10.0]]]  # x 4..12, y 4..10
    bits = torch.zeros(1, 14, 18, dtype=torch.bool)
    bits[0, 4:10, 4:12] = True
    with_polygons = Instances((14, 18), gt_boxes=Boxes(torch.tensor([[4.0, 4, 12, 10]])),
                              gt_masks=PolygonMasks(square))
    with_bits = Instances((14, 18), gt_boxes=Boxes(torch.tensor([[4.0, 4, 12, 10]])),
                          gt_masks=BitMasks(bits))
    empty = Instances((14, 18), gt_boxes=Boxes(torch.zeros(0, 4)))
    targets = union_mask_targets([with_polygons, with_bits, empty], (16, 20), 4)
    assert targets.shape == (3, 1, 4, 5)
    expected = torch.zeros(4, 5)
    expected[1, 1:3] = 1.0
    expected[2, 1:3] = 0.5  # rows 8..9 of cells 8..11
    torch.testing.assert_close(targets[1, 0], expected)
    torch.testing.assert_close(targets[0, 0], expected)
    assert targets[2].sum() == 0
