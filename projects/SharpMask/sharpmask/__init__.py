"""DeepMask, SharpMask, InstanceFCN and RefineMask for detectron2.

Importing this package registers its datasets (and, as they land, its meta-architectures,
proposal generators and heads) in detectron2's registries.
"""
from .config import add_sharpmask_config
from .data import register_all as _register_datasets
from .evaluation import SegmentProposalEvaluator
from .modeling import DeepMask, InstanceFCN, SharpMask
from .structures import WindowedMasks

_register_datasets()

__all__ = ["add_sharpmask_config", "DeepMask", "InstanceFCN", "SegmentProposalEvaluator",
           "SharpMask", "WindowedMasks"]
