from .proposal_recall import greedy_match_ranks, proposal_recall_metrics
from .segment_proposal_evaluation import SegmentProposalEvaluator

__all__ = ["SegmentProposalEvaluator", "greedy_match_ranks", "proposal_recall_metrics"]
