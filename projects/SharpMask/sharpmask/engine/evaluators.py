"""Which evaluator a config gets: segment-proposal recall for proposal networks, COCO AP for
detectors (with Boundary AP where they predict masks)."""
from detectron2.data import MetadataCatalog
from ..evaluation import (COCOEvaluatorWithBoundaryAP, DetectionsAsProposals,
                          SegmentProposalEvaluator)

# Meta-architectures whose outputs are {"proposals": Instances}.
PROPOSAL_META_ARCHITECTURES = {"DeepMask", "SharpMask", "InstanceFCN", "ProposalNetwork",
                               "SelectiveSearch"}


def seen_categories(cfg, dataset_name):
    """TEST.SEGMENT_PROPOSALS.SEEN_CATEGORIES, or else, when every training dataset is a
    category subset (e.g. coco_2017_train_voc) and `dataset_name` is not, the categories
    training saw: the open-world configs then report unseen recall with no extra key."""
    if cfg.TEST.SEGMENT_PROPOSALS.SEEN_CATEGORIES:
        return list(cfg.TEST.SEGMENT_PROPOSALS.SEEN_CATEGORIES)
    kept = [MetadataCatalog.get(n).get("ground_truth_categories", None)
            for n in cfg.DATASETS.TRAIN]
    if not kept or None in kept or \
            MetadataCatalog.get(dataset_name).get("ground_truth_categories", None) is not None:
        return []
    return sorted(set().union(*kept))


def build_evaluator(cfg, dataset_name, output_folder):
    opts = cfg.TEST.SEGMENT_PROPOSALS
    detections = opts.DETECTIONS_AS_PROPOSALS
    if cfg.MODEL.META_ARCHITECTURE in PROPOSAL_META_ARCHITECTURES or detections:
        evaluator = SegmentProposalEvaluator(
            dataset_name, output_folder, max_proposals=opts.MAX_PROPOSALS,
            dump_proposals=opts.DUMP_PROPOSALS, paste_chunk_size=opts.PASTE_CHUNK_SIZE,
            label=cfg.MODEL.META_ARCHITECTURE,
            seen_categories=seen_categories(cfg, dataset_name),
        )
        return DetectionsAsProposals(evaluator) if detections else evaluator
    metadata = MetadataCatalog.get(dataset_name)
    evaluator_type = metadata.get("evaluator_type", None)
    if metadata.get("ground_truth_categories", None) is not None:
        raise NotImplementedError(
            f"{dataset_name} keeps the annotations of some categories only "
            f"(from {metadata.source_dataset}); detectron2's COCOEvaluator would score against "
            f"all of them. Evaluate a detector on {metadata.source_dataset} instead.")
    if evaluator_type == "coco":
        return COCOEvaluatorWithBoundaryAP(dataset_name, output_dir=output_folder)
    raise NotImplementedError(
        f"no evaluator for dataset {dataset_name!r} (evaluator_type {evaluator_type!r}) and "
        f"meta-architecture {cfg.MODEL.META_ARCHITECTURE!r}"
    )
