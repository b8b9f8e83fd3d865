"""The embedded shapes dataset: deterministic, varied, and never half-written."""
import json
import os
import time

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from sharpmask.data import shapes
from sharpmask.data.shapes import CATEGORIES, ensure_shapes_split, generate_image


def test_generation_is_deterministic():
    a_img, a_inst = generate_image(7, "val", 3)
    b_img, b_inst = generate_image(7, "val", 3)
    assert np.array_equal(a_img, b_img)
    assert [(c, m.tobytes(), z) for c, m, z in a_inst] == [(c, m.tobytes(), z) for c, m, z in b_inst]
    c_img, _ = generate_image(7, "val", 4)
    assert a_img.shape != c_img.shape or not np.array_equal(a_img, c_img)


def test_val_split_is_varied_and_consistent():
    dicts = DatasetCatalog.get("shapes_val")
    assert len(dicts) == 200
    meta = MetadataCatalog.get("shapes_val")
    assert meta.evaluator_type == "coco" and meta.thing_classes == CATEGORIES
    sides = [s for d in dicts for s in (d["height"], d["width"])]
    assert min(sides) >= 256 and max(sides) <= 640 and max(sides) - min(sides) > 300
    anns = [a for d in dicts for a in d["annotations"]]
    assert {a["category_id"] for a in anns} == set(range(len(CATEGORIES)))
    assert sum(not d["annotations"] for d in dicts) >= 3  # images without objects
    assert sum(a["iscrowd"] for a in anns) >= 5  # crowd regions
    assert np.mean([len(d["annotations"]) for d in dicts]) > 4  # many objects per image
    areas, thin = [], 0
    for d in dicts[:60]:
        for a in d["annotations"]:
            mask = mask_util.decode(a["segmentation"])
            assert mask.shape == (d["height"], d["width"])
            x, y, w, h = a["bbox"]
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            areas.append(mask.sum())
            thin += CATEGORIES[a["category_id"]] == "bar" and min(w, h) < 12
    assert min(areas) < 200 and max(areas) > 40_000  # ~16 px objects to most of the image
    assert thin > 0
    with open(MetadataCatalog.get("shapes_val").json_file) as f:
        coco = json.load(f)
    assert len(coco["images"]) == 200 and len(coco["categories"]) == len(CATEGORIES)


def test_interrupted_or_damaged_split_is_regenerated(tmp_path, monkeypatch):
    """Bad input: an interrupted or damaged generated dataset | regenerated, not mistaken for a
    complete one"""
    monkeypatch.setitem(shapes.SPLITS, "val_mini", (3, 5))
    calls = []
    real = shapes._coco_dict

    def crashing(*args):
        calls.append(1)
        raise KeyboardInterrupt  # killed mid-generation

    monkeypatch.setattr(shapes, "_coco_dict", crashing)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes_split(str(tmp_path), "val_mini")
    assert not (tmp_path / "shapes" / "val_mini").exists()  # nothing that looks complete
    monkeypatch.setattr(shapes, "_coco_dict", real)
    json_file, image_root = ensure_shapes_split(str(tmp_path), "val_mini")
    assert len(os.listdir(image_root)) == 3
    assert [p for p in os.listdir(tmp_path / "shapes") if p.startswith(".val_mini-")] == []
    first = open(json_file).read()
    os.remove(os.path.join(image_root, "000001.jpg"))  # damaged: regenerated identically
    json_file, image_root = ensure_shapes_split(str(tmp_path), "val_mini")
    assert len(os.listdir(image_root)) == 3 and open(json_file).read() == first
    day_ago = time.time_ns() - 86400 * 10**9  # a rewrite, however fast, would date it now
    os.utime(json_file, ns=(day_ago, day_ago))
    ensure_shapes_split(str(tmp_path), "val_mini")  # complete: left alone
    assert os.stat(json_file).st_mtime_ns == day_ago
