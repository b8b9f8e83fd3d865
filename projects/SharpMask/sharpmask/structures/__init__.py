from .rle_masks import RLEMasks
from .windowed_masks import WindowedMasks, encode_masks_as_rles

__all__ = ["RLEMasks", "WindowedMasks", "encode_masks_as_rles"]
