from .deepmask import DeepMask
from .proposal_generator import (DeepMaskProposalGenerator, SegmentProposalGenerator,
                                 SharpMaskProposalGenerator)
from .sharpmask import SharpMask
from .trunk import ProposalTrunk, build_proposal_trunk

__all__ = ["DeepMask", "DeepMaskProposalGenerator", "SegmentProposalGenerator", "SharpMask",
           "SharpMaskProposalGenerator", "ProposalTrunk", "build_proposal_trunk"]
