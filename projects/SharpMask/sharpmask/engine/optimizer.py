"""SGD (detectron2's, as in the papers) or AdamW, with detectron2's parameter groups."""
import torch
from detectron2.solver import build_optimizer as d2_build_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping


def build_optimizer(cfg, model):
    """SOLVER.OPTIMIZER "SGD": detectron2's optimizer; "ADAMW": AdamW with the same weight
    decay and norm/bias groups (used where models train from scratch in a few minutes)."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        return d2_build_optimizer(cfg, model)
    if name != "ADAMW":
        raise ValueError(f"SOLVER.OPTIMIZER = {cfg.SOLVER.OPTIMIZER!r}; use 'SGD' or 'ADAMW'")
    params = get_default_optimizer_params(
        model, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR, weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS)
    return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
        params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
