"""COCO segment-proposal evaluation: class-agnostic mask and box average recall."""
import copy
import itertools
import logging
import os
import shutil
from collections import OrderedDict

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode, Instances
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from pycocotools.coco import COCO

from ..data.category_splits import coco_category_ids
from ..data.validation import drop_invalid_coco_annotations, keep_coco_annotations
from ..structures import encode_masks_as_rles
from ..utils.atomic_io import atomic_write_json, atomic_write_pickle, nan_to_none, output_set
from ..utils.coco_results import segment_results_text, write_json_list
from .plots import plot_ar_vs_proposals, plot_recall_vs_iou
from .proposal_recall import AREA_RANGES, greedy_match_ranks, proposal_recall_metrics

logger = logging.getLogger(__name__)


def _iou_matrix(dets, gts, num_dets, num_gts):
    """pycocotools IoU (RLEs or XYWH boxes) as a (D, G) float array, never crowd."""
    if num_dets == 0 or num_gts == 0:
        return np.zeros((num_dets, num_gts))
    return np.asarray(mask_util.iou(dets, gts, [0] * num_gts)).reshape(num_dets, num_gts)


# What an evaluation writes to its folder, as one set; the manifest, written last, marks it
# complete (`sharpmask.utils.atomic_io.read_output_set`).
OUTPUT_FILES = ("proposal_metrics.json", "proposal_curves.json", "ar_vs_num_proposals.png",
                "recall_vs_iou.png", "box_proposals.pkl", "segment_proposals.json")
OUTPUTS_MANIFEST = "proposal_outputs.json"


def check_finite_proposals(image_id, scores, boxes=None):
    """Refuse non-finite objectness scores or boxes where proposals enter an output (the
    evaluator, the proposal dump): NaN ranks first and poisons files and metrics."""
    bad = int((~torch.isfinite(scores)).sum())
    bad_boxes = 0 if boxes is None else int((~torch.isfinite(boxes)).any(dim=1).sum())
    if bad or bad_boxes:
        raise ValueError(
            f"image {image_id}: {bad} of {len(scores)} objectness scores and {bad_boxes} boxes "
            "are not finite (NaN or inf): the model's outputs are unusable (did its training "
            "diverge? look at its losses), or the proposals' source wrote them")


class SegmentProposalEvaluator(DatasetEvaluator):
    """Average recall of class-agnostic segment (and box) proposals, as COCOeval computes it
    with ``useCats=0, maxDets=[10, 100, 1000]``, plus AR by size at 100 and the AUC (AR averaged
    over 1..1000 proposals).

    Input per image: ``{"proposals": Instances}`` in original image coordinates, with
    ``objectness_logits`` (N,) ranking scores and ``proposal_masks`` (WindowedMasks, BitMasks or
    an (N, H, W) tensor). Box recall uses the tight boxes of the masks; proposals without masks
    (e.g. an RPN's) are evaluated on ``proposal_boxes`` for boxes only.

    Matching is done per image in `process` (so it runs in parallel under distributed
    inference); only the ranks of matched proposals, and for the output files the boxes and
    scores, are gathered to the main process. The masks' COCO results are written by each
    process to its part file under ``output_dir/.proposal_parts/`` as they come, and the main
    process streams the parts into one segment_proposals.json: its memory does not grow with
    the masks (output_dir must be a folder every process sees, as on one machine).

    Open-world protocol: given `seen_categories` (the categories training saw), recall is also
    reported on the seen and on the unseen ground truth alone (tasks "segm_seen",
    "segm_unseen", "bbox_seen", "bbox_unseen"), each as COCOeval gives it on that filtered
    ground truth. A dataset made by `register_category_subset` is evaluated on its kept
    categories only.
    """

    def __init__(self, dataset_name, output_dir=None, *, distributed=True, max_proposals=1000,
                 dump_proposals=True, paste_chunk_size=100, label=None, seen_categories=()):
        """
        Args:
            dataset_name: a registered dataset with ground-truth instance masks.
            output_dir: where metrics, proposal files and plots go (None: nowhere).
            max_proposals: proposals per image kept for evaluation and output (the top ones).
            dump_proposals: write segment_proposals.json and box_proposals.pkl.
            paste_chunk_size: masks pasted at once into the image while RLE-encoding.
            label: name of the method in the plots' legends.
            seen_categories: names of the categories seen in training (empty: no split).
        """
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._max_proposals = max_proposals
        self._dump = dump_proposals
        self._chunk = paste_chunk_size
        self._label = label or "proposals"
        self._coco_api = self._load_ground_truth(dataset_name, output_dir)
        self._category_id = min(self._coco_api.getCatIds() or [1])
        self._seen_ids = (coco_category_ids(self._coco_api, seen_categories,
                                            f"seen categories of {dataset_name}")
                          if seen_categories else None)
        self.reset()

    @staticmethod
    def _load_ground_truth(dataset_name, output_dir):
        metadata = MetadataCatalog.get(dataset_name)
        json_file = getattr(metadata, "json_file", None)
        if json_file is None or not PathManager.exists(json_file):
            DatasetCatalog.get(dataset_name)  # generated datasets (shapes) appear on first use
        if json_file is None or not PathManager.exists(json_file):
            if output_dir is None:
                raise ValueError(f"{dataset_name} has no COCO json; give an output_dir to "
                                 "convert it to one")
            json_file = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
            convert_to_coco_json(dataset_name, json_file)
        # The rules training applies to the dataset dicts, so both count the same objects.
        coco = drop_invalid_coco_annotations(COCO(PathManager.get_local_path(json_file)),
                                             dataset_name)
        kept = metadata.get("ground_truth_categories", None)
        if kept is not None:
            ids = coco_category_ids(coco, kept, dataset_name)
            keep_coco_annotations(coco, lambda a: a["category_id"] in ids)
        return coco

    def reset(self):
        self._results = []
        self._close_part()

    def _part_path(self, rank):
        return os.path.join(self._output_dir, ".proposal_parts", f"rank{rank:04d}.json.part")

    def _close_part(self):
        if getattr(self, "_part_file", None) is not None:
            self._part_file.close()
        self._part_file = None

    def _write_part(self, text):
        """Append one image's results text to this process's part file -> its (rank, offset,
        length) there."""
        if self._part_file is None:
            path = self._part_path(comm.get_rank())
            PathManager.mkdirs(os.path.dirname(path))
            self._part_file = open(path, "wb")
        data = text.encode("ascii")
        offset = self._part_file.tell()
        self._part_file.write(data)
        return comm.get_rank(), offset, len(data)

    def _ground_truth(self, image_id):
        if image_id not in self._coco_api.imgs:
            raise KeyError(f"image {image_id} is not in the ground truth of {self._dataset_name}")
        anns = [a for a in self._coco_api.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        areas = np.array([a["area"] for a in anns], dtype=np.float64)
        subsets = {"": np.ones(len(anns), bool)}
        if self._seen_ids is not None:
            seen = np.array([a["category_id"] in self._seen_ids for a in anns], bool)
            subsets.update({"_seen": seen, "_unseen": ~seen})
        return anns, areas, subsets

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            self._results.append(self._evaluate_image(inp["image_id"], out["proposals"]))

    def _evaluate_image(self, image_id, proposals):
        proposals = proposals.to("cpu")
        scores = (proposals.objectness_logits if proposals.has("objectness_logits")
                  else proposals.scores).float()
        check_finite_proposals(image_id, scores, proposals.proposal_boxes.tensor
                               if proposals.has("proposal_boxes") else None)
        order = np.argsort(-scores.numpy(), kind="mergesort")[: self._max_proposals]
        proposals = proposals[torch.as_tensor(order, dtype=torch.long)]
        scores = scores[order].numpy().astype(np.float64)
        anns, areas, subsets = self._ground_truth(image_id)
        image = self._coco_api.imgs[image_id]

        rles = None
        if proposals.has("proposal_masks"):
            masks = proposals.proposal_masks
            mask_size = tuple(getattr(masks, "image_size", None) or masks.shape[-2:])
            if mask_size != (image["height"], image["width"]):
                raise ValueError(
                    f"image {image_id}: proposal masks are {mask_size} but the image is "
                    f"{(image['height'], image['width'])}; proposals must be in original image "
                    "coordinates"
                )
            rles = encode_masks_as_rles(masks, self._chunk)
            boxes_xywh = mask_util.toBbox(rles) if rles else np.zeros((0, 4))
        else:
            boxes = proposals.proposal_boxes.tensor.numpy().astype(np.float64)
            boxes_xywh = BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
        boxes_xywh = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)

        gt_boxes = [a["bbox"] for a in anns]
        ious = {"bbox": _iou_matrix(boxes_xywh, gt_boxes, len(boxes_xywh), len(anns))}
        if rles is not None:
            gt_rles = [self._coco_api.annToRLE(a) for a in anns]
            ious["segm"] = _iou_matrix(rles, gt_rles, len(rles), len(anns))
        ranks = {}
        for task, iou in ious.items():
            for subset, in_subset in subsets.items():
                ranks[task + subset] = {
                    area: greedy_match_ranks(iou[:, in_subset & (areas >= lo) & (areas <= hi)])
                    for area, (lo, hi) in AREA_RANGES.items()}
        result = {"image_id": image_id, "ranks": ranks}
        if self._dump and self._output_dir:
            result["scores"] = scores.astype(np.float32)
            result["boxes_xywh"] = boxes_xywh.astype(np.float32)
            if rles is not None:
                result["segm_part"] = self._write_part(segment_results_text(
                    image_id, self._category_id, rles, result["boxes_xywh"], result["scores"]))
        return result

    def evaluate(self):
        results = self._results
        self._close_part()
        if self._distributed:
            comm.synchronize()
            results = comm.gather(results, dst=0)
            results = list(itertools.chain(*results))
            if not comm.is_main_process():
                return {}
        by_image = {r["image_id"]: r for r in results}  # a repeated image counts once
        results = [by_image[i] for i in sorted(by_image)]
        if not results:
            logger.warning("SegmentProposalEvaluator received no images.")
            return {}
        tasks = sorted((t for t in results[0]["ranks"] if all(t in r["ranks"] for r in results)),
                       key=lambda t: (not t.startswith("segm"), t))  # segm, segm_seen, ...
        metrics, curves = OrderedDict(), {}
        for task in tasks:
            metrics[task], curves[task] = proposal_recall_metrics(
                [r["ranks"][task] for r in results], self._max_proposals
            )
        num_gts = sum(r["ranks"][tasks[0]]["all"].shape[1] for r in results)
        logger.info("Proposal recall on %s: %d images, %d non-crowd objects",
                    self._dataset_name, len(results), num_gts)
        if self._output_dir:
            self._write_outputs(results, metrics, curves)
        return copy.deepcopy(metrics)

    def _write_outputs(self, results, metrics, curves):
        """The metrics, curves, plots and proposal files as one set (`output_set`): a killed
        evaluation leaves the previous complete set, and `proposal_outputs.json`, written last,
        marks a complete one."""
        with output_set(self._output_dir, OUTPUTS_MANIFEST, OUTPUT_FILES,
                        dataset=self._dataset_name, images=len(results),
                        max_proposals=self._max_proposals) as out:
            # null where a size range has no objects (the metrics returned keep NaN, as
            # COCOeval's -1 would mislead an average)
            atomic_write_json(nan_to_none(metrics), os.path.join(out, "proposal_metrics.json"),
                              indent=2)
            atomic_write_json(nan_to_none({task: {k: np.asarray(v).tolist()
                                                  for k, v in c.items()}
                                           for task, c in curves.items()}),
                              os.path.join(out, "proposal_curves.json"))
            plot_ar_vs_proposals(curves, os.path.join(out, "ar_vs_num_proposals.png"),
                                 self._label)
            plot_recall_vs_iou(curves, os.path.join(out, "recall_vs_iou.png"), self._label)
            if self._dump:
                self._write_proposal_files(results, out)
        # The parts were written for this evaluation only (every process has closed its own);
        # those of a killed one, or of a run with more processes, go too.
        shutil.rmtree(os.path.dirname(self._part_path(0)), ignore_errors=True)

    def _write_proposal_files(self, results, out):
        boxes_xyxy = [BoxMode.convert(r["boxes_xywh"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
                      for r in results]
        atomic_write_pickle(
            {"ids": [r["image_id"] for r in results], "boxes": boxes_xyxy,
             "objectness_logits": [r["scores"] for r in results], "bbox_mode": BoxMode.XYXY_ABS},
            os.path.join(out, "box_proposals.pkl"),
        )
        if "segm_part" not in results[0]:
            return
        parts = {}
        try:
            write_json_list(os.path.join(out, "segment_proposals.json"),
                            self._read_parts([r["segm_part"] for r in results], parts))
        finally:
            for f in parts.values():
                f.close()

    def _read_parts(self, spans, open_files):
        """The texts at `spans` (rank, offset, length), in order, from the part files."""
        for rank, offset, length in spans:
            if rank not in open_files:
                path = self._part_path(rank)
                if not os.path.exists(path):
                    raise FileNotFoundError(
                        f"{path}, the masks of process {rank}, is not visible to the main "
                        "process: give the evaluator an output folder that all processes "
                        "share")
                open_files[rank] = open(path, "rb")
            open_files[rank].seek(offset)
            yield open_files[rank].read(length).decode("ascii")


class DetectionsAsProposals(DatasetEvaluator):
    """Evaluates a detector's ``{"instances": Instances}`` outputs with a
    SegmentProposalEvaluator: each image's detections, whatever their class, become proposals
    ranked by score (``pred_masks`` as masks, or ``pred_boxes`` alone for a box detector).
    This is how the open-world papers measure a class-agnostic Mask R-CNN's recall."""

    def __init__(self, evaluator: SegmentProposalEvaluator):
        self._evaluator = evaluator

    def reset(self):
        self._evaluator.reset()

    def process(self, inputs, outputs):
        converted = []
        for out in outputs:
            detections = out["instances"].to("cpu")
            proposals = Instances(detections.image_size,
                                  proposal_boxes=detections.pred_boxes,
                                  objectness_logits=detections.scores)
            if detections.has("pred_masks"):
                proposals.proposal_masks = detections.pred_masks
            converted.append({"proposals": proposals})
        self._evaluator.process(inputs, converted)

    def evaluate(self):
        return self._evaluator.evaluate()
