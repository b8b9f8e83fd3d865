"""Ground truth and image files checked where they enter: one rule for training, evaluation,
the demo and the proposal dump.

- `annotation_problem`: why an annotation cannot be ground truth (no box, non-finite box or
  polygon coordinates, polygon coordinates far outside the image, a polygon of fewer than 3
  points, an RLE whose size is not its image's). Such
  annotations are skipped with a warning naming image and annotation, by
  `validate_dataset_dicts` (every registered dataset goes through it: `validate_catalog`) and
  by the evaluator's ground truth (`drop_invalid_coco_annotations`), so both count the same
  objects.
- `read_image_checked`: reads an image in the model's format, naming the file when it is
  unreadable, truncated, or of a bit depth detectron2 would silently clip (16-bit, float).
- `proposal_file_problems`: a precomputed-proposal file checked against its dataset (ids,
  finite values, box mode) before a run starts.
"""
import functools
import logging
import math
import os
import pickle

import numpy as np
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager
from PIL import Image

from .coco_json_check import coco_json_problems

logger = logging.getLogger(__name__)
# PIL modes that detectron2's read_image clips to 8 bits (a 16-bit image turns white).
UNSUPPORTED_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _finite(values):
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def annotation_problem(annotation, height, width):
    """None if `annotation` (COCO style: bbox, optional segmentation) can be ground truth of an
    image of height x width; otherwise a short reason."""
    bbox = annotation.get("bbox")
    if not isinstance(bbox, (list, tuple, np.ndarray)) or len(bbox) != 4 or not _finite(bbox) \
            or min(bbox[2:]) < 0:
        return f"bad bbox {bbox}"
    segmentation = annotation.get("segmentation")
    if segmentation is None:
        return None
    if isinstance(segmentation, dict):
        size = list(segmentation.get("size", []))
        if size != [height, width]:
            return f"RLE of size {size} on an image of size {[height, width]}"
        return None
    if not segmentation:
        return "empty segmentation"
    for polygon in segmentation:
        if len(polygon) % 2 or len(polygon) < 6:
            return f"a polygon of {len(polygon) / 2:g} points (at least 3 needed)"
        if not _finite(polygon):
            return "a polygon with a non-finite coordinate"
        xs, ys = polygon[0::2], polygon[1::2]
        if min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or \
                max(ys) > 2 * height:  # rasterising walks every edge pixel by pixel
            return ("a polygon coordinate far outside the image (x beyond [-width, 2 width] "
                    "or y beyond [-height, 2 height]): pycocotools would rasterise it for "
                    "minutes or run out of memory")
    return None


def missing_image_files(dicts):
    """file_name of the records whose local image file does not exist or is not a file (one
    stat per record: about a second for COCO train); remote paths (with "://") are skipped."""
    return [r["file_name"] for r in dicts if "file_name" in r and "://" not in r["file_name"]
            and not os.path.isfile(r["file_name"])]


def validate_dataset_dicts(dicts, dataset_name):
    """Dataset dicts with the annotations `annotation_problem` refuses left out, each named in
    a warning and counted. A missing image file is an error here, when the dataset is loaded
    (before training or inference starts), not when the image is first sampled."""
    missing = missing_image_files(dicts)
    if missing:
        raise FileNotFoundError(
            f"{dataset_name}: {len(missing)} of {len(dicts)} image files do not exist or are not "
            f"files, e.g. {missing[:3]}; restore them, or leave their records out of the "
            "dataset's annotation file")
    skipped = 0
    for record in dicts:
        annotations = record.get("annotations")
        if not annotations:
            continue
        kept = []
        for index, annotation in enumerate(annotations):
            problem = annotation_problem(annotation, record["height"], record["width"])
            if problem is None:
                kept.append(annotation)
                continue
            skipped += 1
            logger.warning("%s: skipping annotation %s of image %s (%s): %s", dataset_name,
                           annotation.get("id", f"#{index}"), record.get("image_id"),
                           record.get("file_name"), problem)
        record["annotations"] = kept
    if skipped:
        logger.warning("%s: %d annotation(s) skipped as invalid ground truth", dataset_name,
                       skipped)
    return dicts


def keep_coco_annotations(coco, keep):
    """Leave in a pycocotools COCO only the annotations for which keep(annotation) is true
    (in place; the index is rebuilt if any went). Returns how many were left out."""
    annotations = coco.dataset.get("annotations", [])
    kept = [a for a in annotations if keep(a)]
    if len(kept) < len(annotations):
        coco.dataset["annotations"] = kept
        coco.createIndex()
    return len(annotations) - len(kept)


def drop_invalid_coco_annotations(coco, dataset_name):
    """The same rule on a pycocotools COCO ground truth (in place, index rebuilt)."""
    def valid(annotation):
        image = coco.imgs[annotation["image_id"]]
        return annotation_problem(annotation, image["height"], image["width"]) is None

    dropped = keep_coco_annotations(coco, valid)
    if dropped:
        logger.warning("%s: %d invalid ground-truth annotation(s) left out of the evaluation, "
                       "as in training", dataset_name, dropped)
    return coco


def _validated_loader(loader, name):
    preloaded = []  # dicts `dataset_problems` loaded, given to the next DatasetCatalog.get

    @functools.wraps(loader)
    def load():
        if preloaded:
            return preloaded.pop()
        try:
            dicts = loader()
        except Exception as e:
            json_file = MetadataCatalog.get(name).get("json_file", None)
            problems = coco_json_problems(json_file) if json_file and os.path.isfile(json_file) \
                else []
            if problems:
                raise ValueError(f"{name}: cannot be loaded:\n- " + "\n- ".join(problems)) from e
            raise
        return validate_dataset_dicts(dicts, name)
    load.sharpmask_validated = True
    load.preloaded = preloaded
    return load


def dataset_problems(name):
    """What stops registered dataset `name` from loading, found by loading it in full (as
    `check_config` does before a run writes anything): its COCO file checked record by record
    (`coco_json_problems`, when it has one), then every record, image files included
    (`validate_dataset_dicts`). [] when it loads; the loaded dicts then serve the run's next
    DatasetCatalog.get(name), so the check costs no second load."""
    json_file = MetadataCatalog.get(name).get("json_file", None)
    if json_file and os.path.isfile(json_file):
        problems = coco_json_problems(json_file)
        if problems:
            return problems
    loader = DatasetCatalog[name]
    try:
        dicts = DatasetCatalog.get(name)
    except Exception as e:
        return [f"{name} cannot be loaded: {type(e).__name__}: {e}"]
    if hasattr(loader, "preloaded"):
        loader.preloaded[:] = [dicts]
    return []


def loaded_dataset(name):
    """DatasetCatalog.get(name), or the dicts `dataset_problems` loaded, leaving them for the
    run (for checks that read a dataset before the run does)."""
    preloaded = getattr(DatasetCatalog[name], "preloaded", None)
    return preloaded[0] if preloaded else DatasetCatalog.get(name)


def validate_catalog():
    """Route every registered dataset through `validate_dataset_dicts` (idempotent)."""
    for name in DatasetCatalog.list():
        loader = DatasetCatalog[name]
        if not getattr(loader, "sharpmask_validated", False):
            DatasetCatalog.pop(name)
            DatasetCatalog.register(name, _validated_loader(loader, name))


def register_validated(name, loader):
    """DatasetCatalog.register, with the loader's dicts validated."""
    DatasetCatalog.register(name, _validated_loader(loader, name))


def check_dataset_files(name, json_file, image_root):
    """Refuse, naming the path and where it is looked for, a dataset whose annotation file or
    image folder is missing (detectron2 would fail later with a bare `No such file`)."""
    for path, what in [(json_file, "annotation file"), (image_root, "image folder")]:
        if path and not os.path.exists(path):
            raise FileNotFoundError(
                f"{name}: the {what} {path} does not exist. COCO is looked for in detectron2's "
                "layout under $DETECTRON2_DATASETS (now "
                f"{os.environ.get('DETECTRON2_DATASETS', 'unset: ./datasets')}): "
                "coco/annotations/instances_*.json and coco/<split>/. Download COCO from "
                "cocodataset.org, or set DETECTRON2_DATASETS to the folder holding coco/.")


def check_image_file(file_name):
    """Refuse, naming the file, an image that cannot be opened or whose pixels detectron2's
    read_image would clip (16-bit, float). Reads the header only."""
    try:
        with Image.open(file_name) as image:
            mode = image.mode
    except Exception as e:
        raise OSError(f"cannot read image {file_name}: {e}") from e
    if mode in UNSUPPORTED_MODES:
        raise OSError(f"image {file_name} has PIL mode {mode!r} (16-bit or float pixels), which "
                      "would be clipped to white; convert it to 8-bit (e.g. RGB) first")


def read_image_checked(file_name, image_format):
    """detectron2's read_image after `check_image_file`, naming the file in every error
    (a truncated JPEG included)."""
    check_image_file(file_name)
    try:
        return utils.read_image(file_name, format=image_format)
    except Exception as e:
        raise OSError(f"cannot read image {file_name}: {e}") from e


class CheckedDatasetMapper(DatasetMapper):
    """detectron2's DatasetMapper, with `check_image_file` and the file named in read errors
    (evaluation, the proposal dump and detector training go through it)."""

    def __call__(self, dataset_dict):
        check_image_file(dataset_dict["file_name"])
        try:
            return super().__call__(dataset_dict)
        except OSError as e:
            raise OSError(f"cannot read image {dataset_dict['file_name']}: {e}") from e


def normalize_proposal_file(proposals):
    """A loaded proposal file with Detectron1's key names ("indexes", "scores") renamed to
    detectron2's ("ids", "objectness_logits"), as detectron2's loader does."""
    for old, new in (("indexes", "ids"), ("scores", "objectness_logits")):
        if old in proposals:
            proposals[new] = proposals.pop(old)
    return proposals


def _proposal_file_structure_problem(path, proposals):
    """What is wrong with the layout of a loaded proposal file, or None: the keys, one entry
    of each per image, unique ids, an absolute bbox_mode (detectron2 cannot convert relative
    ones)."""
    if not isinstance(proposals, dict):
        return (f"{path} holds a {type(proposals).__name__}; a proposal file is a dict with "
                "ids, boxes, objectness_logits (and bbox_mode)")
    proposals = normalize_proposal_file(dict(proposals))
    lacking = [k for k in ("ids", "boxes", "objectness_logits") if k not in proposals]
    if lacking:
        return f"{path} lacks {lacking}; it has {sorted(proposals)}"
    lengths = {k: len(proposals[k]) for k in ("ids", "boxes", "objectness_logits")}
    if len(set(lengths.values())) > 1:
        return (f"{path} has {lengths['ids']} ids but {lengths['boxes']} box arrays and "
                f"{lengths['objectness_logits']} score arrays: one of each per image")
    ids = [str(i) for i in proposals["ids"]]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})[:3]
        return f"{path} lists image ids more than once (e.g. {repeated}): one entry per image"
    try:
        mode = BoxMode(proposals.get("bbox_mode", BoxMode.XYXY_ABS))
    except ValueError:
        mode = None
    if mode not in (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS):
        return (f"{path}: bbox_mode {proposals.get('bbox_mode')!r} is not BoxMode.XYXY_ABS or "
                "XYWH_ABS, the absolute modes detectron2 reads proposals in")
    return None


def load_proposal_file(path):
    """The unpickled contents of a detectron2 proposal file (not yet checked)."""
    with PathManager.open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def proposal_file_problems(path, dataset_name, dicts, examples=3, proposals=None):
    """Why detectron2's precomputed-proposal file at `path` cannot serve `dicts` (one dataset's
    records): its layout (keys, lengths, unique ids, bbox_mode), image ids it lacks, boxes and
    scores of other shapes, non-finite boxes or scores, boxes that contradict the file's
    bbox_mode. [] when it can. `proposals`: the file's contents if already loaded."""
    if proposals is None:
        proposals = load_proposal_file(path)
    structure = _proposal_file_structure_problem(path, proposals)
    if structure:
        return [structure]
    proposals = normalize_proposal_file(dict(proposals))
    index = {str(i): k for k, i in enumerate(proposals["ids"])}
    missing = [d["image_id"] for d in dicts if str(d["image_id"]) not in index]
    problems = []
    if missing:
        problems.append(f"{path} has no proposals for {len(missing)} image(s) of {dataset_name} "
                        f"(ids {missing[:examples]}...); dump them for this dataset with "
                        "tools/dump_proposals.py")
    mode = BoxMode(proposals.get("bbox_mode", BoxMode.XYXY_ABS))
    not_finite, contradicting, out_of_image, total = [], [], 0, 0
    for record in dicts:
        k = index.get(str(record["image_id"]))
        if k is None:
            continue
        try:
            boxes = np.asarray(proposals["boxes"][k], dtype=np.float64)
            scores = np.asarray(proposals["objectness_logits"][k], dtype=np.float64)
        except (TypeError, ValueError) as e:
            return problems + [f"{path}: image {record['image_id']}: boxes and scores must be "
                               f"numeric arrays ({e})"]
        if boxes.size % 4 or scores.ndim != 1 or len(scores) != boxes.size // 4:
            return problems + [f"{path}: image {record['image_id']} has boxes of shape "
                               f"{boxes.shape} and scores of shape {scores.shape}: detectron2 "
                               "needs (N, 4) boxes and (N,) scores, one score per box"]
        boxes = boxes.reshape(-1, 4)
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            not_finite.append(record["image_id"])
            continue
        if mode == BoxMode.XYXY_ABS and ((boxes[:, 2] < boxes[:, 0]) |
                                         (boxes[:, 3] < boxes[:, 1])).any():
            contradicting.append(record["image_id"])
        if mode == BoxMode.XYWH_ABS:  # XYXY boxes read as XYWH reach far past the image
            far = (boxes[:, 0] + boxes[:, 2] > record["width"] * 1.05 + 1) | \
                  (boxes[:, 1] + boxes[:, 3] > record["height"] * 1.05 + 1)
            out_of_image, total = out_of_image + int(far.sum()), total + len(boxes)
    if not_finite:
        problems.append(f"{path}: non-finite boxes or scores for {len(not_finite)} image(s) "
                        f"(ids {not_finite[:examples]}...); NaN scores would sort first and be "
                        "kept")
    if contradicting:
        problems.append(f"{path}: bbox_mode is XYXY_ABS but some boxes have x1 < x0 or y1 < y0 "
                        f"(ids {contradicting[:examples]}...); are they XYWH? set bbox_mode")
    if total and out_of_image > 0.05 * total:
        problems.append(f"{path}: bbox_mode is XYWH_ABS but {out_of_image} of {total} boxes end "
                        "beyond their image (x + w > width): they look like XYXY boxes; set "
                        "bbox_mode to BoxMode.XYXY_ABS")
    return problems
