"""SGD (detectron2's, as in the papers) or AdamW, with detectron2's parameter groups and
gradient clipping, plus clipping of the norm of all gradients together
(SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model", as mmcv's grad_clip in the RefineMask recipe;
detectron2's "norm" clips each parameter's gradient on its own)."""
import functools

import torch
from detectron2.solver import build_optimizer as d2_build_optimizer
from detectron2.solver.build import (_generate_optimizer_class_with_gradient_clipping,
                                     get_default_optimizer_params, maybe_add_gradient_clipping)

FULL_MODEL = "full_model"


def _with_gradient_clipping(cfg, optimizer):
    """The optimizer instance, its step preceded by the configured gradient clipping."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == FULL_MODEL):
        return maybe_add_gradient_clipping(cfg, optimizer)
    clipper = functools.partial(torch.nn.utils.clip_grad_norm_, max_norm=clip.CLIP_VALUE,
                                norm_type=clip.NORM_TYPE)
    optimizer.__class__ = _generate_optimizer_class_with_gradient_clipping(
        type(optimizer), global_clipper=clipper)
    return optimizer


def build_optimizer(cfg, model):
    """SOLVER.OPTIMIZER "SGD": detectron2's optimizer; "ADAMW": AdamW with the same weight
    decay and norm/bias groups (used where models train from scratch in a few minutes)."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name not in ("SGD", "ADAMW"):
        raise ValueError(f"SOLVER.OPTIMIZER = {cfg.SOLVER.OPTIMIZER!r}; use 'SGD' or 'ADAMW'")
    unclipped = cfg.clone()
    unclipped.defrost()
    unclipped.SOLVER.CLIP_GRADIENTS.ENABLED = False
    if name == "SGD":
        return _with_gradient_clipping(cfg, d2_build_optimizer(unclipped, model))
    params = get_default_optimizer_params(
        model, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR, weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS)
    return _with_gradient_clipping(
        cfg, torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY))
