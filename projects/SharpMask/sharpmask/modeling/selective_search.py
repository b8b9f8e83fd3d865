"""Selective Search (Uijlings et al., IJCV 2013), the classical proposal baseline of the DeepMask
and SharpMask papers, as a detectron2 meta-architecture without parameters: OpenCV's
implementation (`cv2.ximgproc.segmentation`, from opencv-contrib-python-headless) run on each
image, so that `train_net.py --eval-only`, `tools/dump_proposals.py` (sharded over CPU
processes, resumable) and the evaluator treat it as they treat our networks."""
import ctypes
import ctypes.util

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from torch import nn

MODES = ("fast", "quality", "single")
# OpenCV ranks regions by hierarchy level times C's rand(), which cv2.setRNGSeed does not seed:
# seeding the C library's generator before each image makes the ranking reproducible.
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))


@META_ARCH_REGISTRY.register()
class SelectiveSearch(nn.Module):
    """Box proposals of Selective Search, best first.

    Input: detectron2's test format ({"image": (C, H, W) in `input_format`, "height",
    "width"}); the image is searched at the size the mapper gives it (INPUT.MIN_SIZE_TEST; 0
    keeps the original) and the boxes are scaled to the original size. Output per image:
    {"proposals": Instances} with proposal_boxes (XYXY) and objectness_logits = -rank:
    OpenCV returns the regions ranked by hierarchy level times a random factor (the paper's
    "Selective Search ranking"), and keeps the first of identical boxes. The random factors
    come from C's rand(), seeded with `seed` before each image: an image gets the same ranking
    whichever process or shard it falls in.

    Modes (the paper's strategies, OpenCV's switches): "fast" (HSV and Lab colour spaces, k in
    {base_k, base_k + inc_k}, the R-CNN and DeepMask papers' setting), "quality" (more colour
    spaces and k values, slower) and "single" (one strategy, for tests).
    """

    @configurable
    def __init__(self, *, mode="fast", base_k=150, inc_k=150, sigma=0.8, max_proposals=2000,
                 seed=0, input_format="BGR"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"MODEL.SELECTIVE_SEARCH.MODE = {mode!r}: must be one of {MODES}")
        self.mode, self.base_k, self.inc_k, self.sigma = mode, base_k, inc_k, sigma
        self.max_proposals, self.seed, self.input_format = max_proposals, seed, input_format

    @classmethod
    def from_config(cls, cfg):
        ss = cfg.MODEL.SELECTIVE_SEARCH
        return {"mode": ss.MODE, "base_k": ss.BASE_K, "inc_k": ss.INC_K, "sigma": ss.SIGMA,
                "max_proposals": ss.MAX_PROPOSALS, "seed": ss.SEED,
                "input_format": cfg.INPUT.FORMAT}

    def search(self, image_bgr):
        """(H, W, 3) uint8 BGR image -> (N, 4) XYXY boxes, best first (at most max_proposals)."""
        segmentation = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        segmentation.setBaseImage(image_bgr)
        if self.mode == "single":
            segmentation.switchToSingleStrategy(self.base_k, self.sigma)
        elif self.mode == "fast":
            segmentation.switchToSelectiveSearchFast(self.base_k, self.inc_k, self.sigma)
        else:
            segmentation.switchToSelectiveSearchQuality(self.base_k, self.inc_k, self.sigma)
        _LIBC.srand(self.seed)
        rects = np.asarray(segmentation.process(), dtype=np.float32).reshape(-1, 4)
        rects = rects[: self.max_proposals]
        return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)

    def forward(self, batched_inputs):
        if self.training:
            raise RuntimeError("Selective Search has nothing to train: evaluate it "
                               "(train_net.py --eval-only) or dump its proposals "
                               "(tools/dump_proposals.py)")
        results = []
        for x in batched_inputs:
            image = x["image"].permute(1, 2, 0).cpu().numpy()
            if self.input_format == "RGB":
                image = image[:, :, ::-1]
            boxes = self.search(np.ascontiguousarray(image.astype(np.uint8)))
            height, width = x.get("height", image.shape[0]), x.get("width", image.shape[1])
            boxes *= np.array([width / image.shape[1], height / image.shape[0]] * 2, np.float32)
            proposals = Instances((height, width),
                                  proposal_boxes=Boxes(torch.from_numpy(boxes)),
                                  objectness_logits=-torch.arange(len(boxes), dtype=torch.float32))
            results.append({"proposals": proposals})
        return results
