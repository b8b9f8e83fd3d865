from .deepmask import DeepMask
from .instancefcn import InstanceFCN
from .proposal_generator import (DeepMaskProposalGenerator, InstanceFCNProposalGenerator,
                                 SegmentProposalGenerator, SharpMaskProposalGenerator)
from .refinemask import RefineMaskHead, RefineMaskROIHeads
from .sharpmask import SharpMask
from .trunk import ProposalTrunk, build_proposal_trunk

__all__ = ["DeepMask", "DeepMaskProposalGenerator", "InstanceFCN",
           "InstanceFCNProposalGenerator", "RefineMaskHead", "RefineMaskROIHeads",
           "SegmentProposalGenerator", "SharpMask",
           "SharpMaskProposalGenerator", "ProposalTrunk", "build_proposal_trunk"]
