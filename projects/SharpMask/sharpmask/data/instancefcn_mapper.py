"""InstanceFCN's image-centric training inputs: a scale-jittered, flipped image and a sample of
labelled windows with their mask targets."""
import copy

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.layers import ROIAlign
from detectron2.modeling.sampling import subsample_labels

from ..modeling.dilated_trunk import STRIDE
from .validation import read_image_checked
from .window_labels import label_windows, window_grid_boxes


class RandomScaleFactor(T.Augmentation):
    """Resize by a factor drawn uniformly from `factors`, lowered if needed so that the long
    side stays within `max_size` (0: no limit)."""

    def __init__(self, factors, max_size=0):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        height, width = image.shape[:2]
        factor = float(np.random.choice(self.factors))
        if self.max_size:
            factor = min(factor, self.max_size / max(height, width))
        return T.ResizeTransform(height, width, max(1, round(height * factor)),
                                 max(1, round(width * factor)))


class InstanceFCNDatasetMapper:
    """Dataset dict -> {"image": (C, H, W) uint8, "height", "width", "image_id",
    "window_cells": (n, 2) long (row, col) of the sampled windows, "window_labels": (n,) float
    (1 positive, 0 negative; positives first), "window_masks": (P, m, m) uint8 targets of the P
    positives}.

    The image is resized by one of INPUT.INSTANCEFCN.TRAIN_SCALES (the paper on COCO:
    DeepMask's scales), then flipped; `windows_per_image` windows are drawn with at most
    `positive_fraction` positives, the rest negatives (detectron2's `subsample_labels`). A mask
    target is the object's mask averaged over each window cell, thresholded at 0.5.
    """

    @configurable
    def __init__(self, *, augmentations, image_format, stride, window_cells, windows_per_image,
                 positive_fraction, labelling):
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.stride, self.window_cells = stride, window_cells
        self.windows_per_image, self.positive_fraction = windows_per_image, positive_fraction
        self.labelling = labelling  # keyword arguments of label_windows
        self.cell_average = ROIAlign((window_cells, window_cells), 1.0, 0, aligned=True)

    @classmethod
    def from_config(cls, cfg):
        augmentations = [RandomScaleFactor(cfg.INPUT.INSTANCEFCN.TRAIN_SCALES,
                                           cfg.INPUT.MAX_SIZE_TRAIN)]
        if cfg.INPUT.RANDOM_FLIP != "none":
            augmentations.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                              vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
        s = cfg.INPUT.INSTANCEFCN
        return {
            "augmentations": augmentations, "image_format": cfg.INPUT.FORMAT,
            "stride": STRIDE, "window_cells": cfg.MODEL.INSTANCEFCN.WINDOW_CELLS,
            "windows_per_image": s.WINDOWS_PER_IMAGE, "positive_fraction": s.POSITIVE_FRACTION,
            "labelling": {"object_size": s.OBJECT_SIZE, "pos_max_shift": s.POS_MAX_SHIFT,
                          "pos_max_scale": s.POS_MAX_SCALE, "neg_min_shift": s.NEG_MIN_SHIFT,
                          "neg_min_scale": s.NEG_MIN_SCALE},
        }

    def __call__(self, dataset_dict):
        record = copy.deepcopy(dataset_dict)
        image = read_image_checked(record["file_name"], self.image_format)
        utils.check_image_size(record, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        size = image.shape[:2]
        annotations = [utils.transform_instance_annotations(a, transforms, size)
                       for a in record.pop("annotations", [])]
        boxes = torch.from_numpy(np.array([a["bbox"] for a in annotations],
                                          dtype=np.float32).reshape(-1, 4))
        is_crowd = torch.tensor([bool(a.get("iscrowd", 0)) for a in annotations],
                                dtype=torch.bool)
        labels, matched = label_windows(boxes, is_crowd, size,
                                        stride=self.stride, window_cells=self.window_cells,
                                        **self.labelling)
        pos, neg = subsample_labels(labels.flatten(), self.windows_per_image,
                                    self.positive_fraction, 0)
        picked = torch.cat([pos, neg])
        cols_per_row = labels.shape[1]
        cells = torch.stack([picked // cols_per_row, picked % cols_per_row], dim=1)
        record["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        record["window_cells"] = cells
        record["window_labels"] = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
        record["window_masks"] = self.mask_targets(annotations, size, matched.flatten()[pos],
                                                   cells[:len(pos)])
        return record

    def mask_targets(self, annotations, size, objects, cells):
        """(P, m, m) uint8: each positive window's object mask, averaged per cell, >= 0.5.

        Only the positives' objects are rasterized, one at a time: a loader worker's memory is
        then one full-size mask, not all of a crowded image's masks in float (246 MB at 2x on
        the densest COCO-size images; docs/scaling.md)."""
        m = self.window_cells
        targets = torch.zeros((len(objects), m, m), dtype=torch.uint8)
        boxes = window_grid_boxes(cells[:, 0], cells[:, 1], self.stride, m)
        for obj in objects.unique().tolist():
            which = (objects == obj).nonzero()[:, 0]
            mask = utils.annotations_to_instances([annotations[obj]], size,
                                                  mask_format="bitmask").gt_masks.tensor
            rois = torch.cat([torch.zeros((len(which), 1)), boxes[which]], dim=1)
            targets[which] = (self.cell_average(mask[:, None].float(), rois)[:, 0] >= 0.5).to(
                torch.uint8)
        return targets
