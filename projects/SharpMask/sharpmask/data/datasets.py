"""Dataset registrations: the embedded `shapes` splits, COCO 2014 `val5k` (the papers' split),
and the open-world category splits of both (`category_splits.py`).

Registered at import of `sharpmask`. Roots are read from the environment then, as detectron2
does for its builtin datasets: `$SHARPMASK_DATASETS` (default `./datasets`) for `shapes`, which is
generated on first use, and `$DETECTRON2_DATASETS` (default `./datasets`) for COCO.
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

from .shapes import CATEGORIES, SPLITS, ensure_shapes_split, shapes_split_paths
from .category_splits import (register_category_subset, register_class_agnostic,
                              register_coco_open_world_splits)
from .coco_scale import register_coco_scale
from .validation import check_dataset_files, register_validated, validate_catalog

SHAPES_DATASETS = {f"shapes_{split}": split for split in SPLITS}
# Subsets of a split: name -> (split, number of leading images). Detectors trained on
# precomputed proposals use a subset, because proposals for all 2000 training images take about
# 70 CPU minutes per proposal network.
SHAPES_SUBSETS = {"shapes_train_200": ("train", 200)}
# The shapes analogue of the open-world protocol: train on 4 of the 8 categories, measure
# recall on the other 4 (a convex, a star-like, a curved and a holed shape on each side).
SHAPES_SEEN_CATEGORIES = ("ellipse", "triangle", "star", "ring")
SHAPES_OPEN_WORLD_SPLITS = {"shapes_train_seen": ("shapes_train", True),
                            "shapes_val_unseen": ("shapes_val", False)}
# The seen training objects in one class, for the class-agnostic Mask R-CNN / RPN baselines.
SHAPES_CLASS_AGNOSTIC = {"shapes_train_seen_agnostic": "shapes_train_seen"}
COCO_VAL5K = "coco_2014_val_first5k"
COCO_VAL5K_SIZE = 5000


def generated_dataset_names():
    """Datasets whose files are generated on first use (so not checked for at start)."""
    return (set(SHAPES_DATASETS) | set(SHAPES_SUBSETS) | set(SHAPES_OPEN_WORLD_SPLITS)
            | set(SHAPES_CLASS_AGNOSTIC))


def shapes_root():
    return os.path.abspath(os.environ.get("SHARPMASK_DATASETS", "datasets"))


def coco_root():
    return os.path.abspath(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def _load_shapes(root, split, name, num_images=None):
    json_file, image_root = ensure_shapes_split(root, split)
    dicts = load_coco_json(json_file, image_root, name, extra_annotation_keys=["id"])
    return dicts if num_images is None else dicts[:num_images]


def register_shapes(root):
    splits = {name: (split, None) for name, split in SHAPES_DATASETS.items()}
    for name, (split, num_images) in {**splits, **SHAPES_SUBSETS}.items():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_validated(name, lambda root=root, split=split, name=name, n=num_images:
                           _load_shapes(root, split, name, n))
        json_file, image_root = shapes_split_paths(root, split)
        MetadataCatalog.get(name).set(
            json_file=json_file, image_root=image_root, evaluator_type="coco",
            thing_classes=list(CATEGORIES),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(CATEGORIES))},
        )
    for name, (source, seen) in SHAPES_OPEN_WORLD_SPLITS.items():
        register_category_subset(name, source, check_files=False,  # generated on first use
                                 **{"categories" if seen else "exclude": SHAPES_SEEN_CATEGORIES})
    for name, source in SHAPES_CLASS_AGNOSTIC.items():
        register_class_agnostic(name, source)


def _load_coco_val5k(json_file, image_root, name):
    check_dataset_files(name, json_file, image_root)
    dicts = load_coco_json(json_file, image_root, name, extra_annotation_keys=["id"])
    return sorted(dicts, key=lambda d: d["image_id"])[:COCO_VAL5K_SIZE]


def register_coco_val5k(root):
    json_file = os.path.join(root, "coco", "annotations", "instances_val2014.json")
    image_root = os.path.join(root, "coco", "val2014")
    if COCO_VAL5K in DatasetCatalog.list():
        DatasetCatalog.remove(COCO_VAL5K)
        MetadataCatalog.remove(COCO_VAL5K)
    register_validated(COCO_VAL5K, lambda: _load_coco_val5k(json_file, image_root, COCO_VAL5K))
    MetadataCatalog.get(COCO_VAL5K).set(json_file=json_file, image_root=image_root,
                                        evaluator_type="coco", **_get_builtin_metadata("coco"))


def register_all():
    register_shapes(shapes_root())
    register_coco_val5k(coco_root())
    register_coco_open_world_splits()
    register_coco_scale()
    validate_catalog()  # detectron2's builtin datasets (COCO, LVIS, ...) too
