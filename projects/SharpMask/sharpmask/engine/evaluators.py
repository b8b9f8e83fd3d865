"""Which evaluator a config gets: segment-proposal recall for proposal networks, COCO AP for
detectors."""
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator

from ..evaluation import SegmentProposalEvaluator

# Meta-architectures whose outputs are {"proposals": Instances}.
PROPOSAL_META_ARCHITECTURES = {"DeepMask", "SharpMask", "InstanceFCN", "ProposalNetwork"}


def build_evaluator(cfg, dataset_name, output_folder):
    if cfg.MODEL.META_ARCHITECTURE in PROPOSAL_META_ARCHITECTURES:
        opts = cfg.TEST.SEGMENT_PROPOSALS
        return SegmentProposalEvaluator(
            dataset_name, output_folder, max_proposals=opts.MAX_PROPOSALS,
            dump_proposals=opts.DUMP_PROPOSALS, paste_chunk_size=opts.PASTE_CHUNK_SIZE,
            label=cfg.MODEL.META_ARCHITECTURE,
        )
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type == "coco":
        return COCOEvaluator(dataset_name, output_dir=output_folder)
    raise NotImplementedError(
        f"no evaluator for dataset {dataset_name!r} (evaluator_type {evaluator_type!r}) and "
        f"meta-architecture {cfg.MODEL.META_ARCHITECTURE!r}"
    )
