from .windowed_masks import WindowedMasks, encode_masks_as_rles

__all__ = ["WindowedMasks", "encode_masks_as_rles"]
