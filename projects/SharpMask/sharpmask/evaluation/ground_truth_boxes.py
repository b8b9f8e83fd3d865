"""Masks predicted for ground-truth boxes: the mask head's quality without the detector's.

Given the true boxes and classes, mask AP no longer depends on which objects the detector
found or how well it placed them, so two mask heads on one detector compare by their masks
alone (the "mask AP with ground-truth boxes" used to analyse mask heads).
"""
import torch
from detectron2.structures import Boxes, BoxMode, Instances


def ground_truth_instances(record, image_size):
    """Non-crowd annotations of a dataset record as Instances in the resized input image:
    pred_boxes (XYXY), pred_classes and scores 1."""
    annotations = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
    height, width = image_size
    boxes = torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                          for a in annotations], dtype=torch.float32).reshape(-1, 4)
    boxes = Boxes(boxes)
    boxes.scale(width / record["width"], height / record["height"])
    return Instances((height, width), pred_boxes=boxes, scores=torch.ones(len(annotations)),
                     pred_classes=torch.tensor([a["category_id"] for a in annotations],
                                               dtype=torch.int64))


@torch.no_grad()
def predict_masks_for_ground_truth(model, inputs, records):
    """A GeneralizedRCNN with a mask head -> its outputs for the ground-truth boxes.

    Args:
        inputs: the test mapper's dicts for `records` (images resized as at inference).
        records: the dataset dicts, with "annotations".
    Returns:
        list of {"instances": Instances} in original image coordinates, as model(inputs).
    """
    images = model.preprocess_image(inputs)
    features = model.backbone(images.tensor)
    given = [ground_truth_instances(r, size) for r, size in zip(records, images.image_sizes)]
    instances = model.roi_heads.forward_with_given_boxes(features, given)
    return model._postprocess(instances, inputs, images.image_sizes)
