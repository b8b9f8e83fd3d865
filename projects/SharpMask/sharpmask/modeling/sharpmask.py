"""SharpMask (Pinheiro et al., ECCV 2016): DeepMask plus top-down refinement with skip features."""
import logging

import torch
from detectron2.config import configurable
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import META_ARCH_REGISTRY

from .deepmask import TRUNK_STRIDE, DeepMask
from .deepmask_weights import load_deepmask_weights
from .sharpmask_refinement import SharpMaskRefinement

logger = logging.getLogger(__name__)
SKIP_FEATURES = ("res4", "res3", "res2", "conv1")  # coarse to fine


@META_ARCH_REGISTRY.register()
class SharpMask(DeepMask):
    """DeepMask whose mask comes from `SharpMaskRefinement` at the full window resolution.

    Training follows the official recipe: the DeepMask part (trunk, shared head, score and
    DeepMask mask layers) is loaded from a trained DeepMask and frozen; only the refinement
    (its M1 layer and stages) learns, on mask samples. At inference the skip features are
    computed once per scale on the whole image and cropped for the top-N windows only.
    """

    @configurable
    def __init__(self, *, refinement, freeze_deepmask=True, **kwargs):
        super().__init__(**kwargs)
        self.refinement = refinement
        self.freeze_deepmask = freeze_deepmask
        if freeze_deepmask:
            for module in (self.trunk, self.head):
                for p in module.parameters():
                    p.requires_grad_(False)
            FrozenBatchNorm2d.convert_frozen_batchnorm(self.trunk)

    @classmethod
    def from_config(cls, cfg):
        args = DeepMask.from_config(cfg)
        sm = cfg.MODEL.SHARPMASK
        shapes = args["trunk"].output_shape()
        args["refinement"] = SharpMaskRefinement(
            cfg.MODEL.DEEPMASK.EMBED_DIM, [shapes[k].channels for k in SKIP_FEATURES],
            args["head"].window_cells, sm.KM, sm.KS, tuple(sm.SKIP_HIDDEN))
        args["freeze_deepmask"] = sm.FREEZE_DEEPMASK
        if sm.DEEPMASK_WEIGHTS and not cfg.MODEL.WEIGHTS:
            load_deepmask_weights(args["trunk"], args["head"], sm.DEEPMASK_WEIGHTS)
        elif sm.DEEPMASK_WEIGHTS:
            logger.info("MODEL.WEIGHTS is set, so MODEL.SHARPMASK.DEEPMASK_WEIGHTS is not "
                        "loaded (the full checkpoint supersedes it)")
        return args

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_deepmask:  # frozen parts stay in eval mode (dropout off)
            self.head.eval()
            self.trunk.eval()
        return self

    def horizontal_maps(self, features):
        maps = self.refinement.horizontal([features[name] for name in SKIP_FEATURES])
        strides = [self.trunk.output_shape()[name].stride for name in SKIP_FEATURES]
        return list(zip(maps, strides))

    def patch_mask_logits(self, vectors, features):
        crops = [self.crop_window(m, stride) for m, stride in self.horizontal_maps(features)]
        return self.refinement(vectors, crops)

    def mask_branch(self):
        return self.refinement

    def decode_masks(self, level_state, rows, cols):
        features, vectors = level_state
        if "horizontal" not in features:  # once per level, only for levels with top windows
            features["horizontal"] = self.horizontal_maps(features)
        n = self.window_cells
        crops = []
        for feature, stride in features["horizontal"]:
            factor = TRUNK_STRIDE // stride
            index = torch.arange(n * factor, device=feature.device)
            r = (rows[:, None] * factor + index)[:, :, None]  # (k, side, 1)
            c = (cols[:, None] * factor + index)[:, None, :]  # (k, 1, side)
            crops.append(feature[0][:, r, c].permute(1, 0, 2, 3))  # (k, C, side, side)
        return torch.sigmoid(self.refinement(vectors[:, rows, cols].t(), crops))

