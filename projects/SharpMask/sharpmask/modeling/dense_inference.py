"""Dense, multi-scale window proposals: the geometry shared by DeepMask, SharpMask and
InstanceFCN inference.

At each scale s the image is resized by s and padded by `pad` grey pixels on every side (then
to a multiple of the trunk stride). A score-map cell (r, c) stands for the window of `window`
pixels whose top-left corner is ((c - cell_offset) * stride, (r - cell_offset) * stride) in
that padded image: DeepMask's windows start at their cell (offset 0), InstanceFCN's are centred
on it (offset m // 2). Scores of all scales are ranked together, and only the top N windows get
masks, decoded by the model.
"""
import math
from dataclasses import dataclass
from typing import Callable, List

import torch
import torch.nn.functional as F
from torchvision.ops import nms
from detectron2.structures import Boxes, Instances

from ..structures import WindowedMasks


@dataclass
class PyramidLevel:
    """One scale of the pyramid: resize factors (resized / original, per axis), the padded
    input's size, and the (rows, cols) score map of its windows."""
    scale_x: float
    scale_y: float
    padded_size: tuple
    scores: torch.Tensor


def pyramid_geometry(height, width, scale, pad, stride, window):
    """Resized size (h, w), exact factors, and padded size (multiple of stride, >= window)."""
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    padded = tuple(max(window, math.ceil((v + 2 * pad) / stride) * stride) for v in (h, w))
    return (h, w), (w / width, h / height), padded


def resize_and_pad(image, size, padded_size, pad):
    """(C, H, W) normalised float image -> (1, C, *padded_size), the image at `size` placed at
    (pad, pad) on zeros (zero is the mean pixel after normalisation: grey padding)."""
    resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                            antialias=size[0] < image.shape[1])
    out = image.new_zeros((1, image.shape[0]) + tuple(padded_size))
    out[:, :, pad:pad + size[0], pad:pad + size[1]] = resized
    return out


def window_boxes(rows, cols, level, stride, window, pad, cell_offset=0):
    """(N,) cells of one level -> (N, 4) XYXY windows in original image coordinates."""
    x0 = ((cols.float() - cell_offset) * stride - pad) / level.scale_x
    y0 = ((rows.float() - cell_offset) * stride - pad) / level.scale_y
    return torch.stack([x0, y0, x0 + window / level.scale_x, y0 + window / level.scale_y], 1)


def greedy_nms_prefix(boxes, scores, threshold, count=None):
    """The first `count` survivors of greedy NMS over boxes sorted by decreasing score,
    identical to NMS over all of them. A box survives or not by the better-ranked boxes only,
    so NMS runs on the best n boxes, n growing x4 until `count` survive: on InstanceFCN's ~30k
    windows per image this avoids most of the quadratic NMS."""
    total = len(scores)
    n = total if count is None else min(total, max(4 * count, 1000))
    while True:
        keep = nms(boxes[:n], scores[:n], threshold)
        if count is None or len(keep) >= count or n == total:
            return keep[:count]
        n = min(total, 4 * n)


def dense_proposals(levels: List[PyramidLevel], decode: Callable, image_size, *, stride, window,
                    pad, top_k, mask_threshold, nms_threshold=1.0, batch_size=100,
                    cell_offset=0, max_proposals=None):
    """Rank all windows of all levels, decode masks for the top `top_k` and make proposals.

    Args:
        decode(level_index, rows, cols) -> (n, S, S) mask probabilities of those windows.
        image_size: (H, W) of the original image.
        nms_threshold: IoU of the NMS on the binarised masks' boxes at mask resolution
            (`WindowedMasks.cell_boxes`; 1.0: no NMS).
        max_proposals: proposals kept after the NMS (default: all).
    Returns:
        Instances with proposal_boxes (tight boxes of the binarised masks), objectness_logits
        and proposal_masks (WindowedMasks), sorted by decreasing score.
    """
    # Float32 from here on: under autocast (TEST.AMP) scores and masks come in bfloat16/float16.
    flat = [lv.scores.flatten().float() for lv in levels]
    sizes = [len(f) for f in flat]
    all_scores = torch.cat(flat) if flat else torch.zeros(0)
    k = min(top_k, len(all_scores))
    scores, index = all_scores.topk(k) if k else (all_scores[:0], all_scores[:0].long())
    offsets = torch.tensor([0] + sizes).cumsum(0)
    level_of = torch.bucketize(index, offsets[1:], right=True)
    result = Instances(image_size)
    if k == 0:
        result.proposal_boxes = Boxes(torch.zeros(0, 4))
        result.objectness_logits = scores
        result.proposal_masks = WindowedMasks(torch.zeros(0, 1, 1), torch.zeros(0, 4),
                                              image_size, mask_threshold)
        return result
    masks, windows = None, torch.zeros(k, 4, device=scores.device)
    for li, level in enumerate(levels):
        picked = (level_of == li).nonzero().flatten()  # positions in the top-k ranking
        if len(picked) == 0:
            continue
        local = index[picked] - offsets[li]
        rows, cols = local // level.scores.shape[1], local % level.scores.shape[1]
        for start in range(0, len(picked), batch_size):
            sl = slice(start, start + batch_size)
            decoded = decode(li, rows[sl], cols[sl]).float()
            if masks is None:
                masks = decoded.new_zeros((k,) + decoded.shape[1:])
            masks[picked[sl]] = decoded
        windows[picked] = window_boxes(rows, cols, level, stride, window, pad, cell_offset)
    proposal_masks = WindowedMasks(masks, windows, image_size, mask_threshold)
    keep = torch.arange(k, device=scores.device)
    if nms_threshold < 1.0:
        # NMS on the masks' boxes at mask resolution: pasting thousands of candidates only to
        # box them would cost more than the network (measured: 2.2 s of 2.9 s per image).
        keep = greedy_nms_prefix(proposal_masks.cell_boxes(), scores, nms_threshold,
                                 max_proposals)
    keep = keep[:max_proposals]
    proposal_masks = proposal_masks[keep]
    result.proposal_boxes = Boxes(proposal_masks.tight_boxes())
    result.objectness_logits = scores[keep]
    result.proposal_masks = proposal_masks
    return result
