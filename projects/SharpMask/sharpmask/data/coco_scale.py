"""`coco_scale_train` / `coco_scale_val`: the COCO-size synthetic set written by
tools/make_coco_scale_dataset.py (COCO 2014 train's 82,783 and val5k's 5,000 records, COCO's
instance statistics, images reused from a pool of 8 photographs), for measuring memory, time
and file sizes at COCO scale without COCO. Not generated on first use: it takes minutes and
~400 MB, and only the scale benchmark needs it."""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

from .validation import register_validated

COCO_SCALE_DATASETS = ("coco_scale_train", "coco_scale_val")


def coco_scale_paths(root=None):
    """Files of the set under `root` (default $SHARPMASK_DATASETS/coco_scale)."""
    root = os.path.abspath(root or os.path.join(
        os.environ.get("SHARPMASK_DATASETS", "datasets"), "coco_scale"))
    return {"root": root, "image_root": os.path.join(root, "images"),
            "train_json": os.path.join(root, "annotations", "instances_train.json"),
            "val_json": os.path.join(root, "annotations", "instances_val.json")}


def _load(name, json_file, image_root):
    if not os.path.exists(json_file):
        raise FileNotFoundError(
            f"{name}: {json_file} does not exist; write the set with "
            "`python tools/make_coco_scale_dataset.py` (a few minutes, ~400 MB), or set "
            "SHARPMASK_DATASETS to the folder holding coco_scale/")
    return load_coco_json(json_file, image_root, name)


def register_coco_scale(root=None):
    paths = coco_scale_paths(root)
    for name in COCO_SCALE_DATASETS:
        json_file = paths["train_json" if name.endswith("train") else "val_json"]
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_validated(name, lambda n=name, j=json_file: _load(n, j, paths["image_root"]))
        MetadataCatalog.get(name).set(json_file=json_file, image_root=paths["image_root"],
                                      evaluator_type="coco", **_get_builtin_metadata("coco"))
