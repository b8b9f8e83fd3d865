from .deepmask import DeepMask
from .instancefcn import InstanceFCN
from .proposal_generator import (DeepMaskProposalGenerator, InstanceFCNProposalGenerator,
                                 SegmentProposalGenerator, SharpMaskProposalGenerator)
from .sharpmask import SharpMask
from .trunk import ProposalTrunk, build_proposal_trunk

__all__ = ["DeepMask", "DeepMaskProposalGenerator", "InstanceFCN",
           "InstanceFCNProposalGenerator", "SegmentProposalGenerator", "SharpMask",
           "SharpMaskProposalGenerator", "ProposalTrunk", "build_proposal_trunk"]
