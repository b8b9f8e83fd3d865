"""DeepMask's centred-object sampling on shapes_train, checked statistically."""
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog

from sharpmask import add_sharpmask_config
from sharpmask.data.build import build_patch_mapper, build_patch_sampler
from sharpmask.data.patch_sampler import patch_affine

N = 3000


@pytest.fixture(scope="module")
def cfg(repo_root):
    c = get_cfg()
    add_sharpmask_config(c)
    c.merge_from_file(str(repo_root / "configs/shapes/deepmask_R18_shapes.yaml"))
    return c


@pytest.fixture(scope="module")
def dicts():
    return DatasetCatalog.get("shapes_train")


@pytest.fixture(scope="module")
def sampler(cfg, dicts):
    return build_patch_sampler(cfg, dicts)


def _object(dicts, spec):
    x, y, w, h = dicts[spec.image_index]["annotations"][spec.annotation_index]["bbox"]
    return np.array([x + w / 2, y + h / 2]), max(w, h)


def test_mask_samples_follow_the_official_rules(cfg, dicts, sampler):
    s = cfg.INPUT.DEEPMASK
    rng = np.random.default_rng(0)
    specs = [sampler.sample_mask(rng) for _ in range(N)]
    offsets, log_scales, categories, flips = [], [], [], 0
    for spec in specs:
        ann = dicts[spec.image_index]["annotations"][spec.annotation_index]
        assert spec.label == 1 and spec.kind == "mask" and not ann["iscrowd"]
        assert min(ann["bbox"][2:]) >= s.MIN_SIDE
        assert mask_util.area(ann["segmentation"]) >= s.MIN_AREA
        center, side = _object(dicts, spec)
        offsets.append((np.asarray(spec.center) - center) * spec.scale)  # in patch pixels
        log_scales.append(math.log2(side * spec.scale / s.OBJECT_SIZE))
        categories.append(ann["category_id"])
        flips += spec.flip
    offsets, log_scales = np.array(offsets), np.array(log_scales)
    assert np.abs(offsets).max() <= s.SHIFT_JITTER + 1e-6
    assert np.abs(offsets).max() > 0.9 * s.SHIFT_JITTER  # the jitter is used, not just bounded
    assert np.abs(log_scales).max() <= s.SCALE_JITTER + 1e-9
    assert np.abs(log_scales).max() > 0.9 * s.SCALE_JITTER
    # Category-uniform: each of the 8 categories ~1/8 despite unequal annotation counts.
    counts = np.bincount(categories, minlength=8)
    assert np.all(np.abs(counts / N - 1 / 8) < 4 * math.sqrt((1 / 8) * (7 / 8) / N))
    assert abs(flips / N - s.FLIP) < 4 * math.sqrt(0.25 / N)


def test_score_samples_are_balanced_and_separated(cfg, dicts, sampler):
    s = cfg.INPUT.DEEPMASK
    rng = np.random.default_rng(1)
    specs = [sampler.sample_score(rng) for _ in range(N)]
    positives = [p for p in specs if p.label == 1]
    assert abs(len(positives) / N - 0.5) < 4 * math.sqrt(0.25 / N)
    lo, hi = s.POS_SCALE_RANGE
    for spec in positives:
        center, side = _object(dicts, spec)
        assert np.allclose(spec.center, center)  # exactly centred
        assert lo - 1e-9 <= math.log2(side * spec.scale / s.OBJECT_SIZE) <= hi + 1e-9
    negatives = [p for p in specs if p.label == 0]
    near_misses = 0
    for spec in negatives:
        for ann in dicts[spec.image_index]["annotations"]:
            if ann["iscrowd"]:
                continue
            x, y, w, h = ann["bbox"]
            offset = np.abs(np.array([x + w / 2, y + h / 2]) - spec.center).max() * spec.scale
            gap = abs(math.log2(max(w, h) * spec.scale / s.OBJECT_SIZE))
            assert not (offset < s.NEG_MIN_SHIFT and gap < s.NEG_MIN_SCALE)
            near_misses += offset < 2 * s.NEG_MIN_SHIFT and gap < 2 * s.NEG_MIN_SCALE
    assert near_misses > 0  # negatives do come close to objects: hard negatives exist
    assert any(not dicts[p.image_index]["annotations"] for p in negatives)  # empty images used


def _slow_target(mask, spec, input_size, window, size):
    """Nearest sample of the full-resolution mask at each target pixel centre, by inverting
    the patch geometry directly (patch centre = spec.center, `scale` patch px per image px)."""
    out = np.zeros((size, size), np.uint8)
    for ty in range(size):
        for tx in range(size):
            px = (input_size - window) / 2 + (tx + 0.5) * window / size  # patch coordinates
            py = (input_size - window) / 2 + (ty + 0.5) * window / size
            dx = (px - input_size / 2) / spec.scale
            x = spec.center[0] + (-dx if spec.flip else dx)
            y = spec.center[1] + (py - input_size / 2) / spec.scale
            xi, yi = int(math.floor(x)), int(math.floor(y))
            if 0 <= yi < mask.shape[0] and 0 <= xi < mask.shape[1]:
                out[ty, tx] = mask[yi, xi]
    return out


def test_rendered_patches_align_masks_flip_and_pad_grey(cfg, dicts, sampler):
    mapper = build_patch_mapper(cfg, dicts)
    rng = np.random.default_rng(2)
    input_size, window = sampler.input_size, cfg.MODEL.DEEPMASK.WINDOW
    size = cfg.MODEL.DEEPMASK.TARGET_SIZE
    ious = []
    for _ in range(40):
        spec = sampler.sample_mask(rng)
        out = mapper(spec)
        assert out["image"].shape == (3, input_size, input_size)
        target = out["gt_mask"].numpy()
        ann = dicts[spec.image_index]["annotations"][spec.annotation_index]
        expected = _slow_target(mask_util.decode(ann["segmentation"]), spec, input_size,
                                window, size)
        inter, union = (target & expected).sum(), (target | expected).sum()
        ious.append(inter / max(union, 1))
        assert target.sum() > 0  # a centred object is in its window
    assert np.median(ious) > 0.9 and min(ious) > 0.7
    # Flipping mirrors the patch about its centre.
    spec = sampler.sample_mask(rng)
    spec.flip = False
    plain = mapper(spec)["image"].numpy().astype(int)
    spec.flip = True
    flipped = mapper(spec)["image"].numpy().astype(int)
    assert np.abs(plain[:, :, ::-1] - flipped).mean() < 2
    # Outside the image the patch is the grey mean pixel.
    spec.center, spec.scale = (0.0, 0.0), 1.0
    corner = mapper(spec)["image"].numpy()
    mean = np.round(cfg.MODEL.PIXEL_MEAN).astype(np.uint8)
    assert np.all(corner[:, :input_size // 2 - 2, :input_size // 2 - 2]
                  == mean[:, None, None])


def test_affine_maps_patch_centre_to_spec_centre():
    from sharpmask.data.patch_sampler import PatchSpec
    spec = PatchSpec(0, (37.25, 80.5), 1.7, False, 1, "mask")
    a = patch_affine(spec, 112)
    # pixel index space: patch centre is at index 55.5 (continuous 56.0)
    center_index = a @ np.array([37.25 - 0.5, 80.5 - 0.5, 1.0])
    assert np.allclose(center_index, [55.5, 55.5])
