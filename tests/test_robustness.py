"""Unusual inputs: grayscale/RGBA files, tiny and huge images, corrupt files, bad annotations."""
import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetMapper
from PIL import Image

from model_helpers import build, load_cfg
from sharpmask.data.build import build_patch_mapper, build_patch_sampler
from sharpmask.data.patch_sampler import PatchSpec

DM = "configs/shapes/deepmask_R18_shapes.yaml"
SM = "configs/shapes/sharpmask_R18_shapes.yaml"


@pytest.fixture(scope="module")
def sharpmask_model(repo_root):
    torch.manual_seed(0)
    model, cfg = build(repo_root, SM, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "",
                       "MODEL.DEEPMASK.TEST_TOPK", "50")
    return model.eval(), cfg


@pytest.mark.parametrize("mode,size", [("L", (90, 70)), ("RGBA", (200, 150)),
                                       ("RGB", (23, 31)), ("L", (1, 1))])
def test_grayscale_rgba_and_tiny_images(sharpmask_model, tmp_path, mode, size):
    """Files of any mode are read in the model's format; images smaller than one window still
    get proposals, inside the image.
    Bad input: grayscale and RGBA images, images smaller than one window | read in the model's
    format; proposals inside the image"""
    model, cfg = sharpmask_model
    path = tmp_path / ("x.png" if mode == "RGBA" else "x.jpg")
    pixels = np.random.default_rng(0).integers(0, 255, size[::-1] + ((4,) if mode == "RGBA"
                                                                       else (3,) if mode == "RGB"
                                                                       else ()))
    Image.fromarray(pixels.astype(np.uint8), mode).save(path)
    record = {"file_name": str(path), "image_id": 1, "height": size[1], "width": size[0]}
    batch = [DatasetMapper(cfg, is_train=False)(record)]
    assert batch[0]["image"].shape == (3, size[1], size[0])
    with torch.no_grad():
        proposals = model(batch)[0]["proposals"]
    assert 0 < len(proposals) <= 50
    boxes = proposals.proposal_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= size[0]).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= size[1]).all()
    assert proposals.proposal_masks.image_size == (size[1], size[0])


def test_wrong_channel_count_is_a_clear_error(sharpmask_model):
    """Bad input: a tensor with the wrong number of channels given to `propose` | ValueError saying
    to convert grayscale/RGBA"""
    model, _ = sharpmask_model
    with pytest.raises(ValueError, match="convert grayscale/RGBA"):
        model.propose(torch.zeros(1, 40, 40, dtype=torch.uint8))


def test_very_large_image_is_processed_at_bounded_size(repo_root):
    """Bad input: a very large image | processed at a bounded size (MODEL.DEEPMASK.TEST_MAX_SIZE)"""
    model, _ = build(repo_root, DM, "MODEL.DEEPMASK.TEST_MAX_SIZE", "400",
                     "MODEL.DEEPMASK.TEST_TOPK", "20")
    model.eval()
    sides = []
    model.trunk.register_forward_pre_hook(lambda m, args: sides.append(max(args[0].shape[-2:])))
    with torch.no_grad():
        proposals = model.propose(torch.zeros(3, 2400, 3000, dtype=torch.uint8))
    largest = 400 * max(model.test_scales) + 2 * model.test_pad + 16
    assert max(sides) <= largest
    assert proposals.proposal_masks.image_size == (2400, 3000)
    windows = proposals.proposal_masks.windows
    assert windows[:, 2].max() > 1500  # windows are in original (large) coordinates


def _records(tmp_path):
    image = np.full((100, 120, 3), 90, np.uint8)
    cv2.rectangle(image, (30, 20), (80, 70), (250, 20, 20), -1)
    cv2.imwrite(str(tmp_path / "ok.jpg"), image)
    good = {"bbox": [30, 20, 51, 51], "bbox_mode": 1, "category_id": 0, "iscrowd": 0,
            "segmentation": [[30, 20, 80, 20, 80, 70, 30, 70]]}
    zero = mask_util.encode(np.zeros((100, 120), np.uint8, order="F"))
    empty = {"bbox": [0, 0, 0, 0], "bbox_mode": 1, "category_id": 1, "iscrowd": 0,
             "segmentation": {"size": zero["size"], "counts": zero["counts"].decode()}}
    thin = {"bbox": [5, 5, 50, 2], "bbox_mode": 1, "category_id": 1, "iscrowd": 0,
            "segmentation": [[5, 5, 55, 5, 55, 7, 5, 7]]}
    sliver = {"bbox": [10, 10, 51, 50], "bbox_mode": 1, "category_id": 1, "iscrowd": 0,
              "segmentation": [[10, 10, 11, 10, 61, 60, 60, 60]]}  # large box, ~50 px area
    return [{"file_name": str(tmp_path / "ok.jpg"), "image_id": 1, "height": 100, "width": 120,
             "annotations": [good, empty, thin, sliver]}]


def test_degenerate_annotations_are_never_sampled(repo_root, tmp_path):
    """Bad input: degenerate masks (empty, 2 px thin, slivers) | never sampled as training patches;
    a dataset with no usable object is refused"""
    cfg = load_cfg(repo_root, DM)
    records = _records(tmp_path)
    sampler = build_patch_sampler(cfg, records)
    rng = np.random.default_rng(0)
    picked = {sampler.sample_mask(rng).annotation_index for _ in range(200)}
    assert picked == {0}  # the empty mask, the 2-px-thin box and the sliver are skipped
    mapper = build_patch_mapper(cfg, records)
    out = mapper(sampler.sample_mask(rng))
    assert out["gt_mask"].sum() > 0
    records[0]["annotations"] = records[0]["annotations"][1:]
    with pytest.raises(ValueError, match="no usable annotation"):
        build_patch_sampler(cfg, records)


def test_corrupt_image_names_the_file(repo_root, tmp_path):
    """Bad input: a corrupt image file met in training | OSError naming the file"""
    cfg = load_cfg(repo_root, DM)
    records = _records(tmp_path)
    (tmp_path / "ok.jpg").write_bytes(b"this is not a JPEG")
    mapper = build_patch_mapper(cfg, records)
    with pytest.raises(OSError, match="cannot read image .*ok.jpg"):
        mapper(PatchSpec(0, (50.0, 50.0), 1.0, False, 0, "score"))


def test_cached_metrics_are_strict_json_and_keep_their_nans(tmp_path):
    """cached_json stores a NaN metric as null (strict JSON) and gives it back as NaN; a NaN
    reaching atomic_write_json is refused before the file exists."""
    import json
    import math

    from sharpmask.utils.atomic_io import atomic_write_json, cached_json

    metrics = {"bbox": {"AP": 12.5, "APs": float("nan")}, "curve": [1.0, float("inf")]}
    first = cached_json(str(tmp_path / "m.json"), lambda: metrics)
    assert json.loads((tmp_path / "m.json").read_text(),
                      parse_constant=lambda c: 1 / 0) == {"bbox": {"AP": 12.5, "APs": None},
                                                          "curve": [1.0, None]}
    again = cached_json(str(tmp_path / "m.json"), lambda: 1 / 0)  # read back, not recomputed
    for got in (first, again):
        assert got["bbox"]["AP"] == 12.5 and math.isnan(got["bbox"]["APs"])
    with pytest.raises(ValueError, match="Out of range float"):
        atomic_write_json(metrics, str(tmp_path / "strict.json"))
    assert not (tmp_path / "strict.json").exists()
