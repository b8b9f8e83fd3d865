"""One protocol for every proposal source before a detector sees its proposals: the same box
NMS over each image's ranked proposals, then the top k (the DeepMask and SharpMask papers
compare methods, and Selective Search, at a number of proposals per image)."""
import pickle

import numpy as np
import torch
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager
from torchvision.ops import nms

from ..utils.atomic_io import atomic_write_pickle
from .validation import normalize_proposal_file


def nms_top_k(boxes, scores, nms_threshold, top_k):
    """(N, 4) XYXY boxes and (N,) scores -> indices of the kept proposals, best first: greedy
    box NMS at IoU `nms_threshold` (>= 1: none) over the proposals ranked by score (ties keep
    their order), then the first `top_k`."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
    order = torch.as_tensor(np.argsort(-scores.numpy(), kind="stable"), dtype=torch.long)
    if nms_threshold < 1.0 and len(order):
        # torchvision's nms ranks by score itself: give it the ranks, so ties keep the order.
        ranks = torch.arange(len(order), 0, -1, dtype=torch.float32)
        order = order[nms(boxes[order], ranks, nms_threshold)]
    return order[:top_k]


def apply_protocol_to_proposal_file(source, destination, nms_threshold, top_k):
    """Rewrite detectron2's proposal file `source` as `destination` (atomically, XYXY_ABS)
    with `nms_top_k` applied to every image -> {"images", "before", "after"} counts."""
    with PathManager.open(source, "rb") as f:
        data = normalize_proposal_file(pickle.load(f, encoding="latin1"))
    mode = BoxMode(data.get("bbox_mode", BoxMode.XYXY_ABS))
    out = {"ids": list(data["ids"]), "boxes": [], "objectness_logits": [],
           "bbox_mode": BoxMode.XYXY_ABS}
    before = after = 0
    for boxes, scores in zip(data["boxes"], data["objectness_logits"]):
        boxes = BoxMode.convert(np.asarray(boxes, np.float32).reshape(-1, 4), mode,
                                BoxMode.XYXY_ABS)
        scores = np.asarray(scores, np.float32).reshape(-1)
        keep = nms_top_k(boxes, scores, nms_threshold, top_k).numpy()
        out["boxes"].append(boxes[keep])
        out["objectness_logits"].append(scores[keep])
        before, after = before + len(scores), after + len(keep)
    atomic_write_pickle(out, destination)
    return {"images": len(out["ids"]), "before": before, "after": after}
