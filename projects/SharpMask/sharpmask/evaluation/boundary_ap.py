"""Boundary AP (Cheng et al., "Boundary IoU", CVPR 2021): COCO's mask AP with each pair's IoU
replaced by min(mask IoU, boundary IoU). A mask's boundary is its inner band of width
d = max(1, round(0.02 x image diagonal)) px (the mask minus its erosion, pixels at the image
border counting as boundary); the boundary IoU of two masks is the IoU of their bands. Mask AP
barely moves when a boundary is off by a few pixels on a large object; Boundary AP does, which
is where RefineMask claims its gain.

Computed by faster-coco-eval (iouType "boundary"); tests/test_boundary_ap.py checks it against
pycocotools' AP on a numpy implementation of the definition.
"""
import copy
import logging

from detectron2.evaluation import COCOEvaluator
from faster_coco_eval import COCO, COCOeval_faster

logger = logging.getLogger(__name__)
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
DILATION_RATIO = 0.02  # the paper's d, as a fraction of the image diagonal


def boundary_ap(ground_truth, detections, image_ids=None, dilation_ratio=DILATION_RATIO):
    """{AP, AP50, AP75, APs, APm, APl} (%) of `detections` (COCO results with RLE masks) on
    `ground_truth` (a COCO json path or its dict), over `image_ids` (default: all images;
    images without detections count). NaN for every metric when there are no detections."""
    if not detections:
        return {m: float("nan") for m in METRICS}
    gt = COCO(copy.deepcopy(ground_truth) if isinstance(ground_truth, dict) else ground_truth,
              print_function=logger.debug)
    evaluation = COCOeval_faster(gt, gt.loadRes(copy.deepcopy(detections)), iouType="boundary",
                                 boundary_dilation_ratio=dilation_ratio,
                                 print_function=logger.debug)
    if image_ids is not None:
        evaluation.params.imgIds = sorted(image_ids)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return {m: 100 * float(v) for m, v in zip(METRICS, evaluation.stats[:len(METRICS)])}


class COCOEvaluatorWithBoundaryAP(COCOEvaluator):
    """detectron2's COCOEvaluator with Boundary AP beside mask AP: results["boundary"] whenever
    masks are evaluated (same predictions, same ground truth, same images)."""

    def _eval_predictions(self, predictions, img_ids=None):
        # copies in the dataset's category ids, before the parent maps them in place
        detections = [dict(r) for p in predictions for r in p["instances"]]
        to_contiguous = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        if to_contiguous:
            to_dataset = {v: k for k, v in to_contiguous.items()}
            for d in detections:
                d["category_id"] = to_dataset[d["category_id"]]
        super()._eval_predictions(predictions, img_ids)
        tasks = self._tasks or self._tasks_from_predictions(detections)
        if "segm" in tasks and detections:
            self._results["boundary"] = boundary_ap(self._coco_api.dataset, detections, img_ids)
            self._logger.info("Boundary AP (dilation %.2f of the diagonal): %s", DILATION_RATIO,
                              ", ".join(f"{k} {v:.1f}" for k, v in
                                        self._results["boundary"].items()))
