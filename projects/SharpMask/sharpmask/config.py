"""`add_sharpmask_config`: every config key this project adds, with its default."""
from detectron2.config import CfgNode as CN


def add_sharpmask_config(cfg):
    """Add the keys of the segment-proposal methods to a detectron2 config (in place).
    Defaults are the official DeepMask/SharpMask settings (REFERENCE.md sections 1, 2, 5)."""
    _C = cfg

    # Selective Search (modeling/selective_search.py): OpenCV's parameters, k the scale of
    # the initial graph segmentation (Felzenszwalb), sigma its Gaussian smoothing.
    _C.MODEL.SELECTIVE_SEARCH = CN()
    _C.MODEL.SELECTIVE_SEARCH.MODE = "fast"  # "fast" (the papers'), "quality" or "single"
    _C.MODEL.SELECTIVE_SEARCH.BASE_K = 150
    _C.MODEL.SELECTIVE_SEARCH.INC_K = 150
    _C.MODEL.SELECTIVE_SEARCH.SIGMA = 0.8
    _C.MODEL.SELECTIVE_SEARCH.MAX_PROPOSALS = 2000  # the DeepMask paper's comparison
    _C.MODEL.SELECTIVE_SEARCH.SEED = 0  # of the random factor in OpenCV's ranking, per image

    # DeepMask network and full-image inference.
    _C.MODEL.DEEPMASK = CN()
    _C.MODEL.DEEPMASK.WINDOW = 160  # iSz: side of the window a proposal covers, in patch px
    _C.MODEL.DEEPMASK.CONTEXT = 16  # context px on each side of the window (input 192)
    _C.MODEL.DEEPMASK.HEAD_CHANNELS = 128  # 1x1 conv after res4 ("head C")
    _C.MODEL.DEEPMASK.EMBED_DIM = 512  # shared low-rank embedding read by both branches
    _C.MODEL.DEEPMASK.MASK_SIZE = 56  # oSz: side of the DeepMask mask output
    _C.MODEL.DEEPMASK.TARGET_SIZE = 112  # gSz: side of the mask target (loss resolution)
    _C.MODEL.DEEPMASK.SCORE_HIDDEN = 1024  # hidden units of the score branch
    _C.MODEL.DEEPMASK.DROPOUT = 0.5  # dropout of the score branch
    _C.MODEL.DEEPMASK.MASK_LOSS_WEIGHT = 1.0  # weight of the per-pixel mask loss
    # "sum" (official): the mask loss is the sum over the global batch (SOLVER.IMS_PER_BATCH,
    # all processes) of each sample's per-pixel mean, i.e. the NIPS paper's eq. 1 with
    # lambda = 1 / batch; "mean": the mean over the batch (a 1 / batch weaker mask loss).
    _C.MODEL.DEEPMASK.MASK_LOSS_REDUCTION = "sum"
    _C.MODEL.DEEPMASK.SCORE_LOSS_WEIGHT = 1.0  # weight of the score loss
    # Image scales of the inference pyramid: 2^-2.5 .. 2^0.5 in steps of 2^0.5.
    _C.MODEL.DEEPMASK.TEST_SCALES = [2 ** (e / 2) for e in range(-5, 2)]
    # Images whose longer side exceeds this are processed with all scales multiplied by
    # TEST_MAX_SIZE / side (proposals stay in original coordinates): bounds memory and time.
    _C.MODEL.DEEPMASK.TEST_MAX_SIZE = 1600
    _C.MODEL.DEEPMASK.TEST_PAD = 80  # grey px padded around each scaled image (iSz / 2)
    _C.MODEL.DEEPMASK.TEST_TOPK = 1000  # windows kept over all scales, then decoded
    _C.MODEL.DEEPMASK.MASK_THRESHOLD = 0.2  # mask probability binarisation threshold
    _C.MODEL.DEEPMASK.NMS_THRESH = 1.0  # box NMS of the proposals; 1.0 = off (official)
    _C.MODEL.DEEPMASK.DECODE_BATCH_SIZE = 100  # windows decoded/refined at once

    # SharpMask refinement.
    _C.MODEL.SHARPMASK = CN()
    _C.MODEL.SHARPMASK.KM = 32  # channels of the first mask encoding (halved per stage)
    _C.MODEL.SHARPMASK.KS = 32  # channels of the first horizontal path (halved per stage)
    _C.MODEL.SHARPMASK.SKIP_HIDDEN = [64, 64, 64, 32]  # first horizontal conv per stage
    _C.MODEL.SHARPMASK.DEEPMASK_WEIGHTS = ""  # trained DeepMask checkpoint to start from
    _C.MODEL.SHARPMASK.FREEZE_DEEPMASK = True  # train only the refinement (official)

    # InstanceFCN (Dai et al., ECCV 2016; REFERENCE.md section 3). Stride-8 dilated res4 trunk.
    _C.MODEL.INSTANCEFCN = CN()
    _C.MODEL.INSTANCEFCN.K = 5  # k: a k x k grid of relative positions, k^2 score maps
    _C.MODEL.INSTANCEFCN.WINDOW_CELLS = 21  # m: window side in stride-8 cells (168 px)
    _C.MODEL.INSTANCEFCN.HIDDEN_DIM = 512  # channels of both branches' first conv
    # A trained DeepMask (or SharpMask) checkpoint whose ResNet (stem, res2-res4) starts the
    # trunk, where COCO runs start from ImageNet weights (`shapes` has none); not loaded when
    # MODEL.WEIGHTS is set.
    _C.MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS = ""
    # The loss is eq. (1): a sum over the sampled windows of the objectness logistic loss plus
    # the sum over each positive window's cells of the per-cell logistic loss, divided by the
    # constant number of windows sampled per batch (INPUT.INSTANCEFCN.WINDOWS_PER_IMAGE x
    # images) to keep the gradient's size independent of the batch. The weights stay 1 (eq. 1
    # has no lambda).
    _C.MODEL.INSTANCEFCN.MASK_LOSS_WEIGHT = 1.0
    _C.MODEL.INSTANCEFCN.OBJECTNESS_LOSS_WEIGHT = 1.0
    # Weigh positive and negative windows as many windows each in the objectness loss. The
    # paper samples 256 windows 1:1, but images rarely have 128 positive windows (`shapes`:
    # ~2.7), and the sample is filled with negatives; False: every window weighs 1.
    _C.MODEL.INSTANCEFCN.BALANCE_OBJECTNESS = True
    # Inference pyramid: the image resized by each of these factors (the paper on COCO:
    # DeepMask's scales; 2^-2.5 .. 2^1 in steps of 2^0.5 give every object side from 40 px to
    # 646 px a scale where it has the canonical size, INPUT.INSTANCEFCN.OBJECT_SIZE x 2^+-1/4),
    # the long side kept within TEST_MAX_SIZE.
    _C.MODEL.INSTANCEFCN.TEST_SCALES = [2 ** (e / 2) for e in range(-5, 3)]
    _C.MODEL.INSTANCEFCN.TEST_MAX_SIZE = 1500
    # Windows of all scales ranked by objectness and assembled before the NMS (0: all windows,
    # the paper's procedure).
    _C.MODEL.INSTANCEFCN.TEST_PRE_NMS_TOPK = 0
    _C.MODEL.INSTANCEFCN.TEST_TOPK = 1000  # proposals kept after the NMS
    _C.MODEL.INSTANCEFCN.MASK_THRESHOLD = 0.5  # assembled mask probabilities binarised here
    _C.MODEL.INSTANCEFCN.NMS_THRESH = 0.8  # NMS on the binary masks' tight boxes
    _C.MODEL.INSTANCEFCN.DECODE_BATCH_SIZE = 1000  # windows assembled at once

    # RefineMask mask head (Zhang et al., CVPR 2021; REFERENCE.md section 4), used with
    # MODEL.ROI_HEADS.NAME RefineMaskROIHeads and MODEL.ROI_MASK_HEAD.NAME RefineMaskHead.
    _C.MODEL.REFINEMASK = CN()
    _C.MODEL.REFINEMASK.NUM_INSTANCE_CONVS = 2  # 3x3 convs on the 14x14 RoI features
    _C.MODEL.REFINEMASK.CONV_DIM = 256  # their channels
    # Channels of the stages at 14, 28, 56, 112 px (ROI_MASK_HEAD.POOLER_RESOLUTION x 2^k).
    _C.MODEL.REFINEMASK.STAGE_CHANNELS = [256, 128, 64, 32]
    _C.MODEL.REFINEMASK.DILATIONS = [1, 3, 5]  # the multi-branch fusion block's 3x3 convs
    _C.MODEL.REFINEMASK.SEMANTIC_IN_FEATURE = "p2"  # stride-4 FPN level read by the semantic head
    _C.MODEL.REFINEMASK.NUM_SEMANTIC_CONVS = 4
    _C.MODEL.REFINEMASK.SEMANTIC_CONV_DIM = 256
    _C.MODEL.REFINEMASK.SEMANTIC_LOSS_WEIGHT = 1.0  # BCE vs the union of the image's masks
    _C.MODEL.REFINEMASK.STAGE_LOSS_WEIGHTS = [0.25, 0.5, 0.75, 1.0]  # BAR loss, per stage
    # Feed the stages' masks (the instance mask and the semantic mask) as sigmoids (official
    # COCO config: mask_use_sigmoid=True), else as logits.
    _C.MODEL.REFINEMASK.MASK_USE_SIGMOID = True
    # The first stages take BCE on all pixels (official start_stage=1: stages 14 and 28); each
    # later one only on a boundary band, and at inference replaces the previous mask only there.
    _C.MODEL.REFINEMASK.FULL_LOSS_STAGES = 2
    # Width (px at the previous, coarser stage) of the BAR loss's band, then upsampled x2.
    _C.MODEL.REFINEMASK.BOUNDARY_WIDTH = 2
    # Width (px at the previous stage) of the band that the finer stage refines at inference.
    _C.MODEL.REFINEMASK.MERGE_BOUNDARY_WIDTH = 1
    # Weight of the box head's classification loss (detectron2 only has the regression one,
    # MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT); honoured by RefineMaskROIHeads, whose official
    # recipe weights both by 2.
    _C.MODEL.ROI_BOX_HEAD.CLS_LOSS_WEIGHT = 1.0

    # Our networks as the proposal generator of a detectron2 detector (frozen, own weights).
    _C.MODEL.SEGMENT_PROPOSAL_GENERATOR = CN()
    _C.MODEL.SEGMENT_PROPOSAL_GENERATOR.CONFIG_FILE = ""  # config of the proposal network
    _C.MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS = ""  # its trained checkpoint
    _C.MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TRAIN = 2000  # proposals per image in training
    _C.MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TEST = 1000  # proposals per image at inference
    _C.MODEL.SEGMENT_PROPOSAL_GENERATOR.MIN_BOX_SIZE = 0.0  # drop smaller (e.g. empty) boxes
    # Box NMS over the network's own top proposals before the top k (1.0: none, the network's
    # proposals as they come); 0.7 is make detect-demo's protocol for proposal files.
    _C.MODEL.SEGMENT_PROPOSAL_GENERATOR.NMS_THRESH = 1.0

    # DeepMask/SharpMask/InstanceFCN trunks in channels-last memory format (faster convolutions
    # on CPUs with oneDNN and on tensor-core GPUs; measured in the shapes configs' headers).
    _C.MODEL.CHANNELS_LAST = False

    # Submodules trained no further (names as in model.named_modules(), e.g. "backbone",
    # "proposal_generator", "roi_heads.box_head"): their weights come from MODEL.WEIGHTS. Used to
    # train Fast R-CNN heads on a fixed backbone and to compare mask heads on a fixed detector.
    _C.MODEL.FROZEN_MODULES = []
    # Load MODEL.WEIGHTS even if it has no weights for a whole top-level module of the model
    # (which then starts at random); off, such a checkpoint is refused (engine/weights_check.py).
    _C.MODEL.WEIGHTS_ALLOW_PARTIAL = False

    # DeepMask/SharpMask patch sampling (training).
    _C.INPUT.DEEPMASK = CN()
    _C.INPUT.DEEPMASK.MASK_BATCH_PROB = 0.5  # HFREQ: probability a batch is mask samples
    _C.INPUT.DEEPMASK.OBJECT_SIZE = 92  # canonical largest object side in the window
    _C.INPUT.DEEPMASK.SCALE_JITTER = 0.25  # mask samples: log2 scale jitter, +-
    _C.INPUT.DEEPMASK.SHIFT_JITTER = 16  # mask samples: centre shift in patch px, +-
    _C.INPUT.DEEPMASK.FLIP = 0.5  # horizontal flip probability
    _C.INPUT.DEEPMASK.MIN_AREA = 100  # objects smaller than this (px) are not sampled
    _C.INPUT.DEEPMASK.MIN_SIDE = 5  # objects with a box side below this (px) are not sampled
    # Score samples' scale bins, log2 wide (official `scale`): a positive's largest side lands
    # in (OBJECT_SIZE, OBJECT_SIZE * 2^SCALE_STEP]; negatives take one of the image scales
    # 2^NEG_SCALE_RANGE[0] .. 2^NEG_SCALE_RANGE[1] in these steps (official: 21 bins, 2^-3..2^2).
    _C.INPUT.DEEPMASK.SCALE_STEP = 0.25
    _C.INPUT.DEEPMASK.NEG_SCALE_RANGE = [-3.0, 2.0]
    _C.INPUT.DEEPMASK.NEG_MIN_SHIFT = 48  # negatives: no object centre this close (patch px)
    _C.INPUT.DEEPMASK.NEG_MIN_SCALE = 1.0  # ... at a log2 size within this of OBJECT_SIZE

    # InstanceFCN image-centric training. Each image is resized by one of TRAIN_SCALES (chosen
    # uniformly; the long side kept within INPUT.MAX_SIZE_TRAIN): the test scales, so that
    # every object size the pyramid covers is also learned.
    _C.INPUT.INSTANCEFCN = CN()
    _C.INPUT.INSTANCEFCN.TRAIN_SCALES = [2 ** (e / 2) for e in range(-5, 3)]
    _C.INPUT.INSTANCEFCN.WINDOWS_PER_IMAGE = 256  # windows sampled per image for the loss
    _C.INPUT.INSTANCEFCN.POSITIVE_FRACTION = 0.5  # at most this share positive (1:1)
    # DeepMask's positive/negative definition (NIPS 2015), in resized-image px: 96 = 168 * 128
    # / 224, its 128 px object in a 224 px patch carried over to InstanceFCN's 168 px windows.
    _C.INPUT.INSTANCEFCN.OBJECT_SIZE = 96  # canonical largest object side
    _C.INPUT.INSTANCEFCN.POS_MAX_SHIFT = 16  # positive: object centre within this (px)
    _C.INPUT.INSTANCEFCN.POS_MAX_SCALE = 0.25  # ... and |log2(side / OBJECT_SIZE)| <= this
    _C.INPUT.INSTANCEFCN.NEG_MIN_SHIFT = 32  # negative: no object centre within this (px)
    _C.INPUT.INSTANCEFCN.NEG_MIN_SCALE = 1.0  # ... at |log2(side / OBJECT_SIZE)| < this

    # "SGD" (detectron2's, the papers' choice) or "ADAMW" (for from-scratch CPU runs).
    _C.SOLVER.OPTIMIZER = "SGD"
    # Learning-rate factors applied after each of SOLVER.STEPS (empty: detectron2's GAMMA^k).
    _C.SOLVER.LR_FACTORS = []

    # DeepMask/SharpMask patch evaluation during training (official Trainer:test): mask IoU
    # and score accuracy on NUM_PATCHES fixed held-out mask and score patches of DATASETS.TEST,
    # every PERIOD iterations and at the end (0: off), logged as patch/*; the model with the
    # best patch/recall@0.7 is kept as model_best.pth. Official: every 2 epochs of 4000
    # batches, on 500 batches of 32.
    _C.TEST.PATCH_EVAL = CN()
    _C.TEST.PATCH_EVAL.PERIOD = 0
    _C.TEST.PATCH_EVAL.NUM_PATCHES = 16000
    _C.TEST.PATCH_EVAL.SEED = 0

    # Mixed precision in dense inference (DeepMask, SharpMask, InstanceFCN): the networks run
    # under autocast in DTYPE ("bfloat16"; "float16" on GPUs only); scores and mask
    # probabilities are cast back to float32 before ranking, NMS and thresholding.
    _C.TEST.AMP = CN()
    _C.TEST.AMP.ENABLED = False
    _C.TEST.AMP.DTYPE = "bfloat16"

    # Segment-proposal evaluation (SegmentProposalEvaluator).
    _C.TEST.SEGMENT_PROPOSALS = CN()
    # Proposals per image evaluated and written out (the papers' protocol: 1000).
    _C.TEST.SEGMENT_PROPOSALS.MAX_PROPOSALS = 1000
    # Write segment_proposals.json (COCO RLE results) and box_proposals.pkl with the metrics.
    _C.TEST.SEGMENT_PROPOSALS.DUMP_PROPOSALS = True
    # Masks pasted into the image at once while RLE-encoding (bounds memory per image).
    _C.TEST.SEGMENT_PROPOSALS.PASTE_CHUNK_SIZE = 100
    # Open-world protocol: names of the categories seen in training (e.g. the 20 VOC ones,
    # sharpmask.data.VOC_CATEGORIES). Non-empty: recall is also reported on the seen and the
    # unseen ground truth alone (segm_seen / segm_unseen / bbox_seen / bbox_unseen). Empty:
    # the categories of DATASETS.TRAIN when those are category subsets (coco_2017_train_voc,
    # register_category_subset), else no split.
    _C.TEST.SEGMENT_PROPOSALS.SEEN_CATEGORIES = []
    # Evaluate a detector's detections (e.g. a class-agnostic Mask R-CNN's, the open-world
    # papers' baseline) as segment proposals, ranked by score, instead of by COCO AP. Set
    # TEST.DETECTIONS_PER_IMAGE to 1000 and MODEL.ROI_HEADS.SCORE_THRESH_TEST to 0 with it.
    _C.TEST.SEGMENT_PROPOSALS.DETECTIONS_AS_PROPOSALS = False
    return cfg
