"""Which InstanceFCN windows are positive, negative or ignored, by DeepMask's definition
(Pinheiro et al., NIPS 2015): a window is positive when an object is roughly centred in it and
has the canonical size; negative when every object is far from centred or far from that size.

A window is the square of m cells centred on its cell of the stride-s map: cell (r, c) covers
pixels [(c - m // 2) * s, (c - m // 2 + m) * s) horizontally (and likewise for rows).
"""
import torch


def window_grid_boxes(rows, cols, stride, window_cells):
    """(N,) cells -> (N, 4) XYXY window boxes in the (resized) image's pixels."""
    x0 = (cols.float() - window_cells // 2) * stride
    y0 = (rows.float() - window_cells // 2) * stride
    side = window_cells * stride
    return torch.stack([x0, y0, x0 + side, y0 + side], dim=1)


def label_windows(gt_boxes, is_crowd, image_size, *, stride, window_cells, object_size,
                  pos_max_shift, pos_max_scale, neg_min_shift, neg_min_scale):
    """Label every window of an image.

    Args:
        gt_boxes: (G, 4) XYXY object boxes in image pixels; is_crowd: (G,) bool (crowd regions
            are never positive, and windows near them are never negative).
        image_size: (H, W). The grid has ceil(H / stride) x ceil(W / stride) cells.
        object_size: canonical largest object side (px) in a window of window_cells * stride.
        pos_max_shift, pos_max_scale: positive when the object's box centre is within this many
            px of the window centre (both axes) and |log2(side / object_size)| <= pos_max_scale.
        neg_min_shift, neg_min_scale: negative when no object is within neg_min_shift px at a
            |log2(side / object_size)| below neg_min_scale.
    Returns:
        labels: (rows, cols) long, 1 positive, 0 negative, -1 ignored (also windows whose
            centre lies outside the image); matched: (rows, cols) long, the object of each
            positive (the most centred one), -1 elsewhere.
    """
    height, width = image_size
    rows, cols = -(-height // stride), -(-width // stride)
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    windows = window_grid_boxes(r.flatten(), c.flatten(), stride, window_cells)
    centres = (windows[:, :2] + windows[:, 2:]) / 2  # (N, 2)
    labels = torch.zeros(len(centres), dtype=torch.long)
    matched = torch.full((len(centres),), -1, dtype=torch.long)
    if len(gt_boxes):
        boxes = gt_boxes.float()
        object_centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        sides = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values.clamp(min=1e-6)
        shift = (centres[:, None] - object_centres[None]).abs().max(dim=2).values  # (N, G)
        scale_gap = torch.log2(sides / object_size).abs()[None]  # (1, G)
        positive = (shift <= pos_max_shift) & (scale_gap <= pos_max_scale) & ~is_crowd[None]
        near = (shift < neg_min_shift) & (scale_gap < neg_min_scale)
        labels[near.any(dim=1)] = -1
        is_positive = positive.any(dim=1)
        labels[is_positive] = 1
        masked_shift = torch.where(positive, shift, shift.new_tensor(float("inf")))
        matched[is_positive] = masked_shift[is_positive].argmin(dim=1)
    outside = (centres[:, 0] >= width) | (centres[:, 1] >= height)
    labels[outside] = -1
    matched[outside] = -1
    return labels.view(rows, cols), matched.view(rows, cols)
