"""The project's DefaultTrainer: device-aware DDP and the right evaluator per model."""
import logging
import os
import weakref

import torch.distributed as dist
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.utils import comm

from ..data.build import build_patch_train_loader
from ..data.instancefcn_mapper import InstanceFCNDatasetMapper
from ..data.validation import CheckedDatasetMapper
from ..evaluation.patch_evaluation import PatchEvaluator
from .amp import CPUAMPTrainer
from .checkpoint import AtomicCheckpointer
from .ddp import device_aware_ddp
from .evaluators import build_evaluator
from .freeze import freeze_modules
from .idle_head import IdleHeadHook
from .lr_schedule import build_lr_scheduler
from .optimizer import build_optimizer
from .weights_check import check_weights_cover_model


PATCH_TRAINED_META_ARCHITECTURES = {"DeepMask", "SharpMask"}


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        with device_aware_ddp():
            super().__init__(cfg)
        model = self._trainer.model
        if cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE == "cpu":  # AMPTrainer needs CUDA
            self._trainer = CPUAMPTrainer(model, self._trainer.data_loader,
                                          self._trainer.optimizer)
        # DefaultTrainer holds the hooks, but its inner SimpleTrainer/AMPTrainer runs the step
        # and calls its own after_backward, over its own (empty) hook list: without this, no
        # after_backward hook (IdleHeadHook) would ever run.
        self._trainer.after_backward = self.after_backward
        name = type(model).__name__
        if hasattr(model, "module"):
            name += f"({type(model.module).__name__})"
        backend = f" ({dist.get_backend()})" if comm.get_world_size() > 1 else ""
        logging.getLogger(__name__).info(
            "Training %s in %d process%s%s", name, comm.get_world_size(),
            "es" if comm.get_world_size() > 1 else "", backend)

    def build_hooks(self):
        """detectron2's hooks, plus for DeepMask/SharpMask the idle-head rule and the patch
        evaluation with its best checkpoint (before the writer, which logs their scalars).
        DefaultTrainer calls this at the end of __init__, before any hook holds the
        checkpointer: it is made atomic here."""
        self.checkpointer = AtomicCheckpointer(self._trainer.model, self.cfg.OUTPUT_DIR,
                                               trainer=weakref.proxy(self))
        extra = []
        cfg = self.cfg
        if cfg.MODEL.META_ARCHITECTURE in PATCH_TRAINED_META_ARCHITECTURES:
            extra.append(IdleHeadHook())
            period = cfg.TEST.PATCH_EVAL.PERIOD
            if period > 0 and cfg.DATASETS.TEST:
                evaluator = PatchEvaluator(cfg, cfg.DATASETS.TEST, cfg.TEST.PATCH_EVAL.NUM_PATCHES,
                                           cfg.TEST.PATCH_EVAL.SEED)
                extra.append(hooks.EvalHook(period, lambda: {
                    "patch": evaluator.evaluate(self.model)}))
                extra.append(hooks.BestCheckpointer(period, self.checkpointer,
                                                    "patch/recall@0.7", mode="max"))
        hook_list = super().build_hooks()
        at = len(hook_list) - 1 if isinstance(hook_list[-1], hooks.PeriodicWriter) \
            else len(hook_list)
        return hook_list[:at] + extra + hook_list[at:]

    def resume_or_load(self, resume=True):
        if not (resume and self.checkpointer.has_checkpoint()):
            check_weights_cover_model(self.model, self.cfg.MODEL.WEIGHTS,
                                      self.cfg.MODEL.WEIGHTS_ALLOW_PARTIAL)
        super().resume_or_load(resume=resume)

    @classmethod
    def build_model(cls, cfg):
        return freeze_modules(super().build_model(cfg), cfg.MODEL.FROZEN_MODULES)

    @classmethod
    def build_train_loader(cls, cfg):
        if cfg.MODEL.META_ARCHITECTURE in PATCH_TRAINED_META_ARCHITECTURES:
            return build_patch_train_loader(cfg)
        if cfg.MODEL.META_ARCHITECTURE == "InstanceFCN":
            return build_detection_train_loader(cfg, mapper=InstanceFCNDatasetMapper(cfg))
        return build_detection_train_loader(cfg, mapper=CheckedDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name,
                                           mapper=CheckedDatasetMapper(cfg, False))

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)


class TrainOnlyTrainer(Trainer):
    """Trainer without the full-image evaluation at the end of training (its caller evaluates,
    or does not need it); the DeepMask/SharpMask patch evaluation and best checkpoint still run
    on DATASETS.TEST."""

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        return {}
