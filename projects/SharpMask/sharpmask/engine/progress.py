"""Training and evaluation with one progress bar per stage, for the demo scripts.

The console shows a tqdm bar (with ETA) per stage; detectron2's detailed logs go to a file.
"""
import logging
import os
import sys

import torch

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import HookBase
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

from ..config import add_sharpmask_config
from .trainer import TrainOnlyTrainer, Trainer

SHAPES_DEMO_CONFIGS = {"DeepMask": "configs/shapes/deepmask_R18_shapes.yaml",
                       "SharpMask": "configs/shapes/sharpmask_R18_shapes.yaml",
                       "InstanceFCN": "configs/shapes/instancefcn_R18_shapes.yaml"}


# The config key through which a method starts from the DeepMask trained before it.
STARTS_FROM_DEEPMASK = {"SharpMask": "MODEL.SHARPMASK.DEEPMASK_WEIGHTS",
                        "InstanceFCN": "MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS"}


def build_demo_cfg(name, output_dir, opts):
    """The frozen shapes config of method `name` (a key of SHAPES_DEMO_CONFIGS) with `opts`,
    writing to `output_dir`/<name in lower case>. SharpMask and InstanceFCN start from the
    DeepMask of the same `output_dir` (`output_dir`/deepmask/model_final.pth) unless `opts`
    say otherwise."""
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg.merge_from_file(SHAPES_DEMO_CONFIGS[name])
    start = [STARTS_FROM_DEEPMASK[name], os.path.join(output_dir, "deepmask", "model_final.pth")] \
        if name in STARTS_FROM_DEEPMASK else []
    cfg.merge_from_list(start + list(opts) + ["OUTPUT_DIR", os.path.join(output_dir, name.lower())])
    cfg.freeze()
    return cfg


class ProgressBar(HookBase):
    """A tqdm bar over training iterations (tqdm shows the ETA)."""

    def __init__(self, description):
        self.description = description

    def before_train(self):
        self.bar = tqdm(total=self.trainer.max_iter - self.trainer.start_iter,
                        desc=self.description, unit="it", dynamic_ncols=True)

    def after_step(self):
        self.bar.update(1)

    def after_train(self):
        self.bar.close()


class ProgressEvaluator(DatasetEvaluator):
    """Counts images through evaluation on a tqdm bar."""

    def __init__(self, total, description):
        self.total, self.description = total, description

    def reset(self):
        self.bar = tqdm(total=self.total, desc=self.description, unit="img", dynamic_ncols=True)

    def process(self, inputs, outputs):
        self.bar.update(len(inputs))

    def evaluate(self):
        self.bar.close()
        return {}


def prepare_output(folder):
    """Create the demo's folder (returned as an absolute path), send detectron2's, our and
    fvcore's logs to its log.txt only (not the console), and use every CPU core (or
    OMP_NUM_THREADS when set)."""
    folder = os.path.abspath(folder)
    os.makedirs(folder, exist_ok=True)
    for name in ("detectron2", "sharpmask", "fvcore"):
        setup_logger(os.path.join(folder, "log.txt"), name=name, color=False)
        logging.getLogger(name).handlers = [
            h for h in logging.getLogger(name).handlers
            if getattr(h, "stream", None) not in (sys.stdout, sys.stderr)]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count() or 1)
    return folder


def train_with_progress(cfg, description):
    """Train `cfg` (resuming from its OUTPUT_DIR, so an interrupted run continues) and return
    the model. The full-image evaluation is left for `evaluate_with_progress`; the patch
    evaluation (TEST.PATCH_EVAL) runs during training."""
    seed_all_rng(cfg.SEED if cfg.SEED >= 0 else None)  # as default_setup does in train_net.py
    trainer = TrainOnlyTrainer(cfg)
    trainer.register_hooks([ProgressBar(f"train {description}")])
    trainer.resume_or_load(resume=True)
    if trainer.start_iter < trainer.max_iter:
        trainer.train()
    return trainer.model


def evaluate_with_progress(cfg, model, description, output_folder=None):
    """Trainer.test on DATASETS.TEST[0] with a progress bar; returns the evaluator's results."""
    dataset = cfg.DATASETS.TEST[0]
    evaluator = Trainer.build_evaluator(cfg, dataset, output_folder)
    bar = ProgressEvaluator(len(DatasetCatalog.get(dataset)),
                            f"evaluate {description} on {dataset}")
    model.eval()
    return Trainer.test(cfg, model, DatasetEvaluators([evaluator, bar]))

