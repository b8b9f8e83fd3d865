"""Proposal files written by hand, and what a detector's RoI heads receive from them."""
import pickle

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage


def hand_written_proposal_file(path, dataset, count=12):
    """A proposal file in original image coordinates: `count` boxes per image inside the image,
    their logits in no order -> {image_id: (boxes, logits)}."""
    rng = np.random.default_rng(0)
    by_id = {}
    for r in DatasetCatalog.get(dataset):
        w, h = r["width"], r["height"]
        x0, y0 = rng.uniform(0, w / 2, count), rng.uniform(0, h / 2, count)
        boxes = np.stack([x0, y0, x0 + rng.uniform(8, w / 2, count),
                          y0 + rng.uniform(8, h / 2, count)], 1).astype(np.float32)
        by_id[r["image_id"]] = (boxes, rng.permutation(count).astype(np.float32))
    with open(path, "wb") as f:
        pickle.dump({"ids": list(by_id), "boxes": [b for b, _ in by_id.values()],
                     "objectness_logits": [s for _, s in by_id.values()],
                     "bbox_mode": BoxMode.XYXY_ABS}, f)
    return by_id


def proposals_at_roi_heads(model, batch):
    """The proposals the RoI heads receive for `batch` (a forward pre-hook)."""
    seen = []
    handle = model.roi_heads.register_forward_pre_hook(lambda m, args: seen.append(args[2]))
    with torch.no_grad(), EventStorage():
        model(batch)
    handle.remove()
    return seen[0]
