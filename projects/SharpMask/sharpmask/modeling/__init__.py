from .deepmask import DeepMask
from .sharpmask import SharpMask
from .trunk import ProposalTrunk, build_proposal_trunk

__all__ = ["DeepMask", "SharpMask", "ProposalTrunk", "build_proposal_trunk"]
