"""Category splits of a dataset, for the open-world proposal protocol.

Open-world proposal papers (OLN, LDET, GGN) train on the COCO annotations of the 20 PASCAL VOC
categories only (the other objects stay in the images, unannotated) and measure recall on the
60 other categories ("VOC -> non-VOC"). `register_category_subset` makes such a split of any
registered dataset: the same images, with only the annotations of the kept categories. The
split's metadata is the source's (same json file, image folder and class ids) plus
`ground_truth_categories`, the kept names, which `SegmentProposalEvaluator` applies to the COCO
ground truth so that evaluation counts the same objects as the dataset dicts.
"""
from detectron2.data import DatasetCatalog, MetadataCatalog

from .validation import check_dataset_files, register_validated

# The 20 PASCAL VOC categories under their COCO names.
VOC_CATEGORIES = ("airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
                  "cow", "dining table", "dog", "horse", "motorcycle", "person", "potted plant",
                  "sheep", "couch", "train", "tv")
# COCO split name -> (source dataset, keep the VOC categories (True) or the others (False)).
COCO_OPEN_WORLD_SPLITS = {
    "coco_2017_train_voc": ("coco_2017_train", True),
    "coco_2017_val_nonvoc": ("coco_2017_val", False),
    "coco_2014_train_voc": ("coco_2014_train", True),
    "coco_2014_val_first5k_nonvoc": ("coco_2014_val_first5k", False),
}


def _unknown_categories_error(names, known, what):
    return ValueError(f"{what}: unknown categories {sorted(names)}; the categories are "
                      f"{list(known)}")


def coco_category_ids(coco, names, what):
    """Ids of the categories called `names` in a pycocotools COCO; unknown names refused."""
    by_name = {c["name"]: c["id"] for c in coco.dataset.get("categories", [])}
    unknown = set(names) - set(by_name)
    if unknown:
        raise _unknown_categories_error(unknown, by_name, what)
    return {by_name[n] for n in names}


def keep_annotations_of(dicts, contiguous_ids):
    """Dataset dicts (copies of the records) whose annotations are only those with a category
    in `contiguous_ids`; every image is kept, with or without objects left."""
    return [{**record, "annotations": [a for a in record.get("annotations", [])
                                       if a["category_id"] in contiguous_ids]}
            for record in dicts]


def register_category_subset(name, source, categories=None, exclude=None, check_files=True):
    """Register `name`: the images of the registered dataset `source` with only the annotations
    of `categories` (names), or of all categories but `exclude`. One of the two is given.
    `check_files`: refuse a missing annotation file or image folder with a clear message
    before loading (False for a source that writes its files on first load, like shapes).

    The split shares the source's metadata (json_file, image_root, thing_classes and ids), with
    `ground_truth_categories` added, so evaluation and training see the same objects.
    """
    if (categories is None) == (exclude is None):
        raise ValueError("register_category_subset: give either categories or exclude")
    source_meta = MetadataCatalog.get(source)
    classes = list(source_meta.get("thing_classes", []))
    if not classes:
        raise ValueError(f"register_category_subset({name!r}): the source dataset {source!r} "
                         "has no thing_classes in its metadata; register it first")
    named = set(categories if categories is not None else exclude)
    if named - set(classes):
        raise _unknown_categories_error(named - set(classes), classes, f"{name} (from {source})")
    kept = [c for c in classes if (c in named) == (categories is not None)]
    kept_ids = {classes.index(c) for c in kept}

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)

    def load():
        meta = MetadataCatalog.get(source)  # now: the source may have been registered again
        if check_files:
            check_dataset_files(name, meta.get("json_file", None), meta.get("image_root", None))
        return keep_annotations_of(DatasetCatalog.get(source), kept_ids)

    register_validated(name, load)
    fields = {k: v for k, v in source_meta.as_dict().items() if k != "name"}
    MetadataCatalog.get(name).set(**fields, ground_truth_categories=kept, source_dataset=source)


def register_class_agnostic(name, source):
    """Register `name`: the registered dataset `source` with every object in one class,
    "object" (category 0), to train class-agnostic detectors (the Mask R-CNN and RPN baselines
    of the open-world papers). For training only: its metadata has no COCO json to evaluate
    against; evaluate on the source dataset, as a proposal method (DetectionsAsProposals)."""
    source_meta = MetadataCatalog.get(source)
    if not source_meta.get("thing_classes", None):
        raise ValueError(f"register_class_agnostic({name!r}): the source dataset {source!r} "
                         "has no thing_classes in its metadata; register it first")
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)

    def load():
        return [{**record, "annotations": [{**a, "category_id": 0}
                                           for a in record.get("annotations", [])]}
                for record in DatasetCatalog.get(source)]

    register_validated(name, load)
    annotated = source_meta.get("ground_truth_categories", None) or source_meta.thing_classes
    # ground_truth_categories: which categories' objects are annotated (the evaluator infers
    # the seen categories of a model trained on this dataset from it).
    MetadataCatalog.get(name).set(thing_classes=["object"], source_dataset=source,
                                  ground_truth_categories=list(annotated))


def register_coco_open_world_splits():
    """The VOC -> non-VOC splits of COCO 2017 and 2014 (train: VOC only; val: non-VOC only)."""
    for name, (source, voc) in COCO_OPEN_WORLD_SPLITS.items():
        register_category_subset(name, source, **{"categories" if voc else "exclude":
                                                  VOC_CATEGORIES})
