"""Proposal masks already encoded as COCO RLEs, e.g. read from a results file."""
from typing import List

import torch


class RLEMasks:
    """N masks of one image as COCO RLE dicts ({"size": [H, W], "counts"}), indexable like
    detectron2's mask structures so that `Instances` can hold, sort and slice them;
    `encode_masks_as_rles` returns them as they are."""

    def __init__(self, rles: List[dict], image_size):
        self.rles = list(rles)
        self.image_size = tuple(image_size)

    def __len__(self):
        return len(self.rles)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return RLEMasks(self.rles[item], self.image_size)
        index = torch.as_tensor(item)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        return RLEMasks([self.rles[i] for i in index.reshape(-1).tolist()], self.image_size)

    def to(self, device):
        return self
