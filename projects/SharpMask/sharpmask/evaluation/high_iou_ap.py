"""COCO AP restricted to high IoU thresholds: a measure that mask boundaries decide.

At IoU 0.8-0.95 a mask matches only if its outline is nearly right, so this AP separates mask
heads that differ at boundaries (RefineMask's claim) more than AP or AP50 do.
"""
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

HIGH_IOU_THRESHOLDS = (0.8, 0.85, 0.9, 0.95)


def ap_at_iou_thresholds(json_file, detections, image_ids, iou_type="segm",
                         thresholds=HIGH_IOU_THRESHOLDS):
    """AP (%) averaged over `thresholds`, all areas, 100 detections per image, as COCOeval.

    detections: COCO results (list of dicts, as COCOEvaluator's coco_instances_results.json);
    image_ids: the evaluated images (those without detections count, as in COCOEvaluator).
    """
    if not detections:
        return 0.0
    gt = COCO(json_file)
    # loadRes writes "bbox"/"area" into the dicts it gets: give it copies.
    evaluation = COCOeval(gt, gt.loadRes([dict(d) for d in detections]), iou_type)
    evaluation.params.imgIds = sorted(image_ids)
    evaluation.params.iouThrs = np.asarray(thresholds, dtype=np.float64)
    evaluation.evaluate()
    evaluation.accumulate()
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # T x R x K, area all, 100 dets
    valid = precision > -1
    return float(100 * precision[valid].mean()) if valid.any() else 0.0
