from .config_checks import ConfigError, check_config, merge_config
from .ddp import create_device_aware_ddp_model, device_aware_ddp
from .evaluators import PROPOSAL_META_ARCHITECTURES, build_evaluator
from .trainer import Trainer
from .weights_check import check_weights_cover_model

__all__ = ["ConfigError", "Trainer", "check_weights_cover_model", "build_evaluator", "check_config", "create_device_aware_ddp_model",
           "device_aware_ddp", "merge_config", "PROPOSAL_META_ARCHITECTURES"]
