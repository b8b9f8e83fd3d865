"""Soft masks that live in their own windows, pasted into the image only when needed.

A segment-proposal network returns up to 1000 masks per image. Held as full-image bitmaps they
would take ~300 MB per COCO image, so proposals carry each mask at its network resolution
together with the window (in image coordinates) that the mask covers; `encode_masks_as_rles`
pastes them chunk by chunk and keeps only COCO run-length encodings.
"""
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.structures import BitMasks


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
            item = slice(item, item + 1) if item != -1 else slice(-1, None)
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

    def iter_pasted(self, chunk_size: int = 100) -> Iterator[torch.Tensor]:
        """Yield (n <= chunk_size, H, W) bool image masks, in order."""
        for start in range(0, len(self), chunk_size):
            chunk = slice(start, start + chunk_size)
            pasted = paste_masks_in_image(
                self.masks[chunk].float(), self.windows[chunk], self.image_size, self.threshold
            )
            yield pasted.bool()

    def tight_boxes(self, chunk_size: int = 100) -> torch.Tensor:
        """(N, 4) XYXY tight boxes of the binarised, pasted masks (zeros for an empty mask)."""
        boxes = [BitMasks(chunk).get_bounding_boxes().tensor for chunk in self.iter_pasted(chunk_size)]
        return torch.cat(boxes) if boxes else torch.zeros(0, 4, device=self.device)

    def __repr__(self) -> str:
        return (f"WindowedMasks(num={len(self)}, mask_size={tuple(self.masks.shape[1:])}, "
                f"image_size={self.image_size}, threshold={self.threshold})")


def _encode_bool_masks(masks: torch.Tensor) -> List[dict]:
    """(n, H, W) bool -> n COCO RLEs (counts as bytes, as pycocotools returns them)."""
    if len(masks) == 0:
        return []
    array = np.asfortranarray(masks.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
    return mask_util.encode(array)


def encode_masks_as_rles(masks, chunk_size: int = 100) -> List[dict]:
    """COCO RLEs of proposal masks given as WindowedMasks, BitMasks or an (N, H, W) tensor."""
    if isinstance(masks, WindowedMasks):
        return [rle for chunk in masks.iter_pasted(chunk_size) for rle in _encode_bool_masks(chunk)]
    if isinstance(masks, BitMasks):
        masks = masks.tensor
    if isinstance(masks, torch.Tensor) and masks.dim() == 3:
        return [rle for start in range(0, len(masks), chunk_size)
                for rle in _encode_bool_masks(masks[start:start + chunk_size].bool())]
    raise TypeError(
        "proposal masks must be WindowedMasks, BitMasks or an (N, H, W) tensor; "
        f"got {type(masks).__name__}"
    )
