from .boundary_ap import COCOEvaluatorWithBoundaryAP, boundary_ap
from .ground_truth_boxes import predict_masks_for_ground_truth
from .high_iou_ap import HIGH_IOU_THRESHOLDS, ap_at_iou_thresholds
from .proposal_files import evaluate_proposal_file
from .proposal_recall import greedy_match_ranks, proposal_recall_metrics
from .segment_proposal_evaluation import DetectionsAsProposals, SegmentProposalEvaluator

__all__ = ["COCOEvaluatorWithBoundaryAP", "DetectionsAsProposals", "HIGH_IOU_THRESHOLDS",
           "SegmentProposalEvaluator", "ap_at_iou_thresholds", "boundary_ap",
           "evaluate_proposal_file", "greedy_match_ranks", "predict_masks_for_ground_truth",
           "proposal_recall_metrics"]
