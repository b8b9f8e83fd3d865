"""The COCO-size synthetic set (tools/make_coco_scale_dataset.py), generated small here, and
the patch sampler's dataset-size-independent memory layout."""
import json
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog

from sharpmask.data.coco_scale import register_coco_scale


@pytest.fixture(scope="module")
def small_coco_scale(repo_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_scale")
    subprocess.run([sys.executable, "tools/make_coco_scale_dataset.py", "--output", str(root),
                    "--train", "600", "--val", "50"], cwd=repo_root, check=True,
                   capture_output=True)
    register_coco_scale(str(root))
    yield root
    register_coco_scale()


def test_statistics_follow_coco(small_coco_scale):
    with open(small_coco_scale / "annotations" / "instances_train.json") as f:
        data = json.load(f)
    anns = [a for a in data["annotations"] if not a["iscrowd"]]
    areas = np.array([a["area"] for a in anns])
    assert len(data["images"]) == 600 and len(data["categories"]) == 80
    assert 6.3 < len(anns) / 600 < 8.3  # COCO: 7.3 (sd of this mean ~0.26)
    for share, expected in [(np.mean(areas < 32 ** 2), 0.41),
                            (np.mean((areas >= 32 ** 2) & (areas <= 96 ** 2)), 0.34),
                            (np.mean(areas > 96 ** 2), 0.25)]:
        assert abs(share - expected) < 0.04
    # Boxes and areas agree with the polygons as pycocotools rasterises them.
    image = {i["id"]: i for i in data["images"]}
    for a in anns[:200]:
        h, w = image[a["image_id"]]["height"], image[a["image_id"]]["width"]
        rle = mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w))
        assert abs(mask_util.area(rle) - a["area"]) <= 0.2 * a["area"] + 20
        x, y, bw, bh = a["bbox"]
        assert 0 <= x and 0 <= y and x + bw <= w + 0.01 and y + bh <= h + 0.01
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert crowd and all(isinstance(a["segmentation"]["counts"], list) for a in crowd)
    assert sum(len(p) // 2 for a in anns for p in a["segmentation"]) / len(anns) > 10


def test_registered_and_loadable(small_coco_scale):
    train, val = DatasetCatalog.get("coco_scale_train"), DatasetCatalog.get("coco_scale_val")
    assert len(train) == 600 and len(val) == 50
    assert len({r["file_name"] for r in train}) <= 8  # a small pool of real photographs
    assert any(not r["annotations"] for r in train)  # ~1% of images have no object


def test_missing_set_names_the_command(tmp_path):
    register_coco_scale(str(tmp_path))
    try:
        with pytest.raises(FileNotFoundError, match="tools/make_coco_scale_dataset.py"):
            DatasetCatalog.get("coco_scale_val")
    finally:
        register_coco_scale()


def test_patch_loader_holds_records_in_one_buffer(repo_root):
    """Per-record Python objects would be copied into every loader worker as it reads them:
    the sampler keeps numpy arrays only, the mapper detectron2's serialized list."""
    from detectron2.config import get_cfg
    from detectron2.data import DatasetFromList

    from sharpmask import add_sharpmask_config
    from sharpmask.data.build import build_patch_train_loader

    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg.merge_from_file(str(repo_root / "configs" / "shapes" / "deepmask_R18_shapes.yaml"))
    cfg.DATASETS.TRAIN, cfg.DATALOADER.NUM_WORKERS = ("shapes_val",), 0
    stream = build_patch_train_loader(cfg).dataset
    records = stream.mapper.dataset_dicts
    assert isinstance(records, DatasetFromList) and records._serialize and len(records) == 200
    for name, value in vars(stream.sampler).items():
        if isinstance(value, dict):
            assert all(isinstance(v, np.ndarray) for v in value.values()), name
        elif isinstance(value, (list, tuple)):
            assert len(value) <= 80, name  # the category ids
        else:
            assert isinstance(value, (np.ndarray, int, float, bool)), name
    assert stream.sampler.image_sizes.shape == (200, 2)
    assert len(stream.sampler.objects) == sum(
        not a.get("iscrowd", 0) for r in DatasetCatalog.get("shapes_val") for a in r["annotations"])
