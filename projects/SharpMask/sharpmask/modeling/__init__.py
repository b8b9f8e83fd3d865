from .deepmask import DeepMask
from .instancefcn import InstanceFCN
from .proposal_generator import (DeepMaskProposalGenerator, InstanceFCNProposalGenerator,
                                 SegmentProposalGenerator, SegmentProposalRCNN,
                                 SharpMaskProposalGenerator)
from .refinemask import RefineMaskHead, RefineMaskROIHeads
from .selective_search import SelectiveSearch
from .sharpmask import SharpMask
from .trunk import ProposalTrunk, build_proposal_trunk

__all__ = ["DeepMask", "DeepMaskProposalGenerator", "InstanceFCN",
           "InstanceFCNProposalGenerator", "RefineMaskHead", "RefineMaskROIHeads",
           "SegmentProposalGenerator", "SegmentProposalRCNN", "SelectiveSearch", "SharpMask",
           "SharpMaskProposalGenerator", "ProposalTrunk", "build_proposal_trunk"]
