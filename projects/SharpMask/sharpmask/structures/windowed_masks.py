"""Soft masks that live in their own windows, pasted into the image only when needed.

A segment-proposal network returns up to 1000 masks per image. Held as full-image bitmaps they
would take ~300 MB per COCO image, so proposals carry each mask at its network resolution
together with the window (in image coordinates) that the mask covers; `encode_masks_as_rles`
pastes them chunk by chunk and keeps only COCO run-length encodings.
"""
import math
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.structures import BitMasks

from .rle_masks import RLEMasks


class WindowedMasks:
    """N soft masks, each defined on a square window of the image.

    Attributes:
        masks (Tensor): (N, S, S) foreground probabilities in [0, 1]; mask i covers windows[i].
        windows (Tensor): (N, 4) windows as XYXY absolute image coordinates (may extend past
            the image border; the part outside is clipped when pasting).
        image_size (tuple): (height, width) of the image the windows refer to.
        threshold (float): probability above which a pasted pixel is foreground.
    """

    def __init__(self, masks: torch.Tensor, windows: torch.Tensor, image_size: Tuple[int, int],
                 threshold: float = 0.5):
        if masks.dim() != 3 or masks.shape[1] != masks.shape[2]:
            raise ValueError(f"masks must be (N, S, S) square soft masks, got {tuple(masks.shape)}")
        if windows.shape != (masks.shape[0], 4):
            raise ValueError(
                f"windows must be (N, 4) XYXY boxes matching {masks.shape[0]} masks, "
                f"got {tuple(windows.shape)}"
            )
        self.masks = masks
        self.windows = windows.to(dtype=torch.float32)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.threshold = float(threshold)

    def __len__(self) -> int:
        return self.masks.shape[0]

    def __getitem__(self, item) -> "WindowedMasks":
        if isinstance(item, int):
            item = [item]  # keep the leading dimension, like Boxes and BitMasks
        return WindowedMasks(self.masks[item], self.windows[item], self.image_size, self.threshold)

    def to(self, device) -> "WindowedMasks":
        return WindowedMasks(self.masks.to(device), self.windows.to(device), self.image_size,
                             self.threshold)

    @property
    def device(self) -> torch.device:
        return self.masks.device

    @staticmethod
    def cat(items: Sequence["WindowedMasks"]) -> "WindowedMasks":
        first = items[0]
        if any(m.image_size != first.image_size or m.threshold != first.threshold for m in items):
            raise ValueError("cannot concatenate WindowedMasks of different images or thresholds")
        if any(m.masks.shape[1:] != first.masks.shape[1:] for m in items):
            raise ValueError("cannot concatenate WindowedMasks of different mask resolutions")
        return WindowedMasks(torch.cat([m.masks for m in items]),
                             torch.cat([m.windows for m in items]), first.image_size,
                             first.threshold)

    def _paste_regions(self, index: torch.Tensor):
        """Binarised masks `index` sampled over their windows, clipped to the image.

        Mask R-CNN's pasting (bilinear sampling at the pixel centres, zero outside the mask),
        computed separably: bilinear weights factor into a row and a column term, so a mask
        pasted over an h x w span is Wx @ M^T @ Wy^T with (w, S) and (S, h) weight matrices, a
        batched matmul for all windows of one size instead of an (h, w) grid_sample.
        Yields (indices (n,), regions (n, h, w) bool, x offsets (n,), y offsets (n,)); a
        region is a transposed view of a contiguous (n, w, h) tensor, i.e. column-major like
        pycocotools' canvases.
        """
        height, width = self.image_size
        size = self.masks.shape[-1]
        windows = self.windows[index]
        sizes = torch.round((windows[:, 2:] - windows[:, :2]) * 1e3)
        _, group_of = torch.unique(sizes, dim=0, return_inverse=True)
        for g in range(int(group_of.max()) + 1 if len(index) else 0):
            members = (group_of == g).nonzero().flatten()
            # Bilinear sampling reaches up to one mask cell past the window's edges.
            win_w, win_h = (float(v) for v in windows[members[0], 2:] - windows[members[0], :2])
            cell_x, cell_y = win_w / size, win_h / size
            span_w = min(width, int(math.ceil(win_w + 2 * cell_x)) + 2)
            span_h = min(height, int(math.ceil(win_h + 2 * cell_y)) + 2)
            per_call = max(1, int(2e7 // (span_w * span_h)))
            for start in range(0, len(members), per_call):
                part = members[start:start + per_call]
                win = windows[part]
                x_off = torch.clamp(torch.floor(win[:, 0] - cell_x) - 1, 0, width - span_w).long()
                y_off = torch.clamp(torch.floor(win[:, 1] - cell_y) - 1, 0, height - span_h).long()
                weights_x = _bilinear_weights(x_off, span_w, win[:, 0], win[:, 2], size)
                weights_y = _bilinear_weights(y_off, span_h, win[:, 1], win[:, 3], size)
                masks = self.masks[index[part]].float()
                sampled = weights_x @ masks.transpose(1, 2) @ weights_y.transpose(1, 2)
                yield part, (sampled >= self.threshold).transpose(1, 2), x_off, y_off

    def iter_pasted(self, chunk_size: int = 100) -> Iterator[torch.Tensor]:
        """Yield (n <= chunk_size, H, W) bool image masks, in order."""
        for canvas in self._iter_canvases(chunk_size):
            yield torch.from_numpy(canvas.transpose(2, 0, 1).astype(bool))

    def _iter_canvases(self, chunk_size):
        """(H, W, n) uint8 Fortran-ordered canvases (pycocotools' layout), in order."""
        height, width = self.image_size
        for start in range(0, len(self), chunk_size):
            index = torch.arange(start, min(start + chunk_size, len(self)), device=self.device)
            canvas = np.zeros((height, width, len(index)), dtype=np.uint8, order="F")
            for part, regions, x_off, y_off in self._paste_regions(index):
                regions = regions.cpu().numpy()
                for i, region, x, y in zip(part.tolist(), regions, x_off.tolist(),
                                           y_off.tolist()):
                    canvas[y:y + region.shape[0], x:x + region.shape[1], i] = region
            yield canvas

    def to_rles(self, chunk_size: int = 100) -> List[dict]:
        """COCO RLEs of the pasted, binarised masks, in order."""
        return [rle for canvas in self._iter_canvases(chunk_size)
                for rle in mask_util.encode(canvas)]

    def tight_boxes(self) -> torch.Tensor:
        """(N, 4) XYXY tight boxes of the binarised, pasted masks (zeros for an empty mask),
        computed without materialising full-image masks."""
        boxes = torch.zeros((len(self), 4), device=self.device)
        index = torch.arange(len(self), device=self.device)
        for part, regions, x_off, y_off in self._paste_regions(index):
            cols, rows = regions.any(dim=1), regions.any(dim=2)  # (n, w), (n, h)
            nonempty = cols.any(dim=1)
            span_w, span_h = cols.shape[1], rows.shape[1]
            first_c = torch.argmax(cols.int(), dim=1)
            last_c = span_w - 1 - torch.argmax(cols.flip(1).int(), dim=1)
            first_r = torch.argmax(rows.int(), dim=1)
            last_r = span_h - 1 - torch.argmax(rows.flip(1).int(), dim=1)
            box = torch.stack([x_off + first_c, y_off + first_r, x_off + last_c + 1,
                               y_off + last_r + 1], dim=1).float()
            boxes[part] = torch.where(nonempty[:, None], box, torch.zeros_like(box))
        return boxes

    def cell_boxes(self) -> torch.Tensor:
        """(N, 4) XYXY boxes of the mask cells above the threshold, in image coordinates and
        clipped to the image (zeros for an empty mask): the tight boxes of the binarised masks
        at their own resolution. A cheap stand-in for `tight_boxes` (within a cell of it) for
        ranking thousands of candidates, e.g. by NMS."""
        n, size = self.masks.shape[:2]
        on = self.masks > self.threshold
        cols, rows = on.any(dim=1), on.any(dim=2)  # (N, S) each
        cell = torch.arange(size, device=self.device)
        first_c = torch.where(cols, cell, size).min(dim=1).values
        last_c = torch.where(cols, cell, -1).max(dim=1).values + 1
        first_r = torch.where(rows, cell, size).min(dim=1).values
        last_r = torch.where(rows, cell, -1).max(dim=1).values + 1
        x0, y0, x1, y1 = self.windows.unbind(1)
        step_x, step_y = (x1 - x0) / size, (y1 - y0) / size
        boxes = torch.stack([x0 + first_c * step_x, y0 + first_r * step_y,
                             x0 + last_c * step_x, y0 + last_r * step_y], dim=1)
        height, width = self.image_size
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        return torch.where(cols.any(dim=1)[:, None], boxes, torch.zeros_like(boxes))

    def __repr__(self) -> str:
        return (f"WindowedMasks(num={len(self)}, mask_size={tuple(self.masks.shape[1:])}, "
                f"image_size={self.image_size}, threshold={self.threshold})")


def _bilinear_weights(offsets, span, lo, hi, size):
    """(n, span, size) weights of the mask cells for pixels offsets + 0 .. span - 1 of a
    window [lo, hi) holding `size` cells: bilinear interpolation at the pixel centres, zero
    past the mask's edges (grid_sample's align_corners=False, padding "zeros")."""
    pixels = torch.arange(span, device=offsets.device)[None, :] + offsets[:, None] + 0.5
    cells = (pixels - lo[:, None]) / (hi - lo)[:, None] * size - 0.5  # (n, span)
    grid = torch.arange(size, device=offsets.device, dtype=cells.dtype)
    return torch.clamp(1 - (cells[:, :, None] - grid).abs(), min=0)


def _encode_bool_masks(masks: torch.Tensor) -> List[dict]:
    """(n, H, W) bool -> n COCO RLEs (counts as bytes, as pycocotools returns them)."""
    if len(masks) == 0:
        return []
    array = np.asfortranarray(masks.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
    return mask_util.encode(array)


def encode_masks_as_rles(masks, chunk_size: int = 100) -> List[dict]:
    """COCO RLEs of proposal masks given as WindowedMasks, BitMasks, RLEMasks or an (N, H, W)
    tensor."""
    if isinstance(masks, RLEMasks):
        return masks.rles
    if isinstance(masks, WindowedMasks):
        return masks.to_rles(chunk_size)
    if isinstance(masks, BitMasks):
        masks = masks.tensor
    if isinstance(masks, torch.Tensor) and masks.dim() == 3:
        return [rle for start in range(0, len(masks), chunk_size)
                for rle in _encode_bool_masks(masks[start:start + chunk_size].bool())]
    raise TypeError(
        "proposal masks must be WindowedMasks, BitMasks, RLEMasks or an (N, H, W) tensor; "
        f"got {type(masks).__name__}"
    )
