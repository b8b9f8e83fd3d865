"""`add_sharpmask_config`: every config key this project adds, with its default."""
from detectron2.config import CfgNode as CN


def add_sharpmask_config(cfg):
    """Add the keys of the segment-proposal methods to a detectron2 config (in place)."""
    _C = cfg
    # Segment-proposal evaluation (SegmentProposalEvaluator).
    _C.TEST.SEGMENT_PROPOSALS = CN()
    # Proposals per image evaluated and written out (the papers' protocol: 1000).
    _C.TEST.SEGMENT_PROPOSALS.MAX_PROPOSALS = 1000
    # Write segment_proposals.json (COCO RLE results) and box_proposals.pkl with the metrics.
    _C.TEST.SEGMENT_PROPOSALS.DUMP_PROPOSALS = True
    # Masks pasted into the image at once while RLE-encoding (bounds memory per image).
    _C.TEST.SEGMENT_PROPOSALS.PASTE_CHUNK_SIZE = 100
    return cfg
