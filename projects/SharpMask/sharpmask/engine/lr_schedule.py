"""Multi-step learning rate with explicit factors (the official DeepMask/SharpMask schedule
1e-3 -> 5e-4 -> 1e-4 has no single GAMMA)."""
import logging

from detectron2.solver import LRMultiplier, WarmupParamScheduler
from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler


def build_lr_scheduler(cfg, optimizer):
    """detectron2's scheduler, or, with SOLVER.LR_FACTORS set, BASE_LR times LR_FACTORS[k]
    after SOLVER.STEPS[k] (with detectron2's warm-up)."""
    factors, steps = list(cfg.SOLVER.LR_FACTORS), list(cfg.SOLVER.STEPS)
    if not factors:
        return d2_build_lr_scheduler(cfg, optimizer)
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupMultiStepLR" or len(factors) != len(steps):
        raise ValueError(f"SOLVER.LR_FACTORS {factors} needs WarmupMultiStepLR and one factor "
                         f"per SOLVER.STEPS {steps}")
    kept = [step for step in steps if step < cfg.SOLVER.MAX_ITER]
    if len(kept) < len(steps):
        logging.getLogger(__name__).warning(
            "SOLVER.STEPS %s beyond SOLVER.MAX_ITER %d are ignored", steps, cfg.SOLVER.MAX_ITER)
    steps, factors = kept, factors[:len(kept)]
    schedule = MultiStepParamScheduler(values=[1.0] + factors, milestones=steps,
                                       num_updates=cfg.SOLVER.MAX_ITER)
    schedule = WarmupParamScheduler(
        schedule, cfg.SOLVER.WARMUP_FACTOR, min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0),
        cfg.SOLVER.WARMUP_METHOD, cfg.SOLVER.RESCALE_INTERVAL)
    return LRMultiplier(optimizer, multiplier=schedule, max_iter=cfg.SOLVER.MAX_ITER)
