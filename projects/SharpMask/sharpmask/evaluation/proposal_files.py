"""Proposals from files, of any method, scored by `SegmentProposalEvaluator`: detectron2's
precomputed-proposal pickle (boxes: box AR) or COCO results with masks (a JSON list of
{"image_id", "segmentation" (RLE), "score"}: mask and box AR), so that Selective Search, an
RPN and outside methods are measured by the code that measures ours."""
import json
import math
from collections import defaultdict

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from ..data.coco_json_check import rle_counts_problem
from ..data.validation import (load_proposal_file, normalize_proposal_file,
                               proposal_file_problems)
from ..structures import RLEMasks
from .segment_proposal_evaluation import SegmentProposalEvaluator

FLOAT32_MAX = float(np.finfo(np.float32).max)


def proposals_from_box_file(path, dataset_name, records):
    """{image_id: Instances(proposal_boxes XYXY, objectness_logits)} in the file's order (the
    evaluator ranks them stably, as pycocotools does: ties keep the file's order, which
    detectron2's loader reverses), from a detectron2 proposal file checked against `records`
    (every image must be in it)."""
    data = load_proposal_file(path)
    problems = proposal_file_problems(path, dataset_name, records, proposals=data)
    if problems:
        raise ValueError("; ".join(problems))
    data = normalize_proposal_file(data)
    mode = BoxMode(data.get("bbox_mode", BoxMode.XYXY_ABS))
    index = {str(i): k for k, i in enumerate(data["ids"])}
    out = {}
    for r in records:
        k = index[str(r["image_id"])]
        boxes = BoxMode.convert(np.asarray(data["boxes"][k], np.float64).reshape(-1, 4), mode,
                                BoxMode.XYXY_ABS)
        out[r["image_id"]] = Instances(
            (r["height"], r["width"]), proposal_boxes=Boxes(torch.as_tensor(boxes).float()),
            objectness_logits=torch.as_tensor(np.asarray(data["objectness_logits"][k],
                                                         np.float32)))
    return out


def proposals_from_segm_file(path, records):
    """{image_id: Instances(proposal_masks RLEMasks, objectness_logits)} from COCO results
    with masks; images without results get none. Names the file, the entry and the field of
    anything the evaluator could not use."""
    with open(path) as f:
        results = json.load(f)
    if not isinstance(results, list):
        raise ValueError(f"{path}: expected a JSON list of COCO results, got "
                         f"{type(results).__name__}")
    sizes = {r["image_id"]: (r["height"], r["width"]) for r in records}
    per_image = defaultdict(list)
    for k, result in enumerate(results):
        where = f"{path}: entry {k}"
        if not isinstance(result, dict) or not {"image_id", "segmentation", "score"} <= set(result):
            raise ValueError(f"{where} lacks image_id, segmentation or score")
        if result["image_id"] not in sizes:
            raise ValueError(f"{where}: image_id {result['image_id']!r} is not in the dataset")
        rle, score = result["segmentation"], result["score"]
        if not (isinstance(rle, dict) and "counts" in rle and "size" in rle):
            raise ValueError(f"{where}: segmentation must be an RLE dict with size and counts "
                             "(polygons: encode them with pycocotools first)")
        if tuple(rle["size"]) != sizes[result["image_id"]]:
            raise ValueError(f"{where}: mask size {rle['size']} but image {result['image_id']} "
                             f"is {list(sizes[result['image_id']])} (original image "
                             "coordinates are expected)")
        problem = rle_counts_problem(rle["counts"], *sizes[result["image_id"]]) \
            if isinstance(rle["counts"], (str, bytes)) else "counts must be a compressed string"
        if problem:
            raise ValueError(f"{where}: segmentation: {problem}")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or \
                not math.isfinite(score) or abs(score) > FLOAT32_MAX:
            raise ValueError(f"{where}: score {score!r} is not a finite number (of float32's "
                             "range: scores are ranked in float32)")
        counts = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
        per_image[result["image_id"]].append(({"size": list(rle["size"]), "counts": counts},
                                              float(score)))
    out = {}
    for image_id, size in sizes.items():
        entries = per_image.get(image_id, [])
        out[image_id] = Instances(size, proposal_masks=RLEMasks([e[0] for e in entries], size),
                                  objectness_logits=torch.tensor([e[1] for e in entries],
                                                                 dtype=torch.float32))
    return out


def evaluate_proposal_file(dataset_name, *, box_file=None, segm_file=None, output_dir=None,
                           max_proposals=1000, seen_categories=(), label=None):
    """Recall of the proposals in `box_file` (detectron2 pickle) or `segm_file` (COCO results
    with masks) on `dataset_name`: the metrics dict of `SegmentProposalEvaluator`."""
    if (box_file is None) == (segm_file is None):
        raise ValueError("give one proposal file: a detectron2 .pkl (boxes) or COCO results "
                         "with masks (.json)")
    records = DatasetCatalog.get(dataset_name)
    proposals = (proposals_from_box_file(box_file, dataset_name, records) if box_file
                 else proposals_from_segm_file(segm_file, records))
    evaluator = SegmentProposalEvaluator(dataset_name, output_dir, distributed=False,
                                         max_proposals=max_proposals, label=label,
                                         seen_categories=seen_categories)
    evaluator.reset()
    for record in records:
        evaluator.process([{"image_id": record["image_id"]}],
                          [{"proposals": proposals[record["image_id"]]}])
    return evaluator.evaluate()
