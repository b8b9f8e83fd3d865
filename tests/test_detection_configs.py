"""The COCO detector configs on our proposals build and train one iteration on shapes data."""
import torch
from detectron2.checkpoint import DetectionCheckpointer

from model_helpers import build
from test_dump_proposals import DM, random_deepmask_proposals
from test_train_net import _iterations, _train_net

ON_SHAPES = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", "8",
             "INPUT.MASK_FORMAT", "bitmask", "INPUT.MIN_SIZE_TRAIN", "(256,)",
             "INPUT.MAX_SIZE_TRAIN", "384", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "1",
             "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()",
             "DATASETS.TRAIN", "('shapes_val_mini',)"]


def test_fast_rcnn_on_precomputed_deepmask_proposals(repo_root, tmp_path):
    proposals = random_deepmask_proposals(repo_root, tmp_path)
    _train_net(repo_root, "--config-file", "configs/fast_rcnn_R50_FPN_deepmask_proposals.yaml",
               *ON_SHAPES, "DATASETS.PROPOSAL_FILES_TRAIN", f"('{proposals}',)",
               "OUTPUT_DIR", str(tmp_path / "out"))
    assert _iterations(tmp_path / "out") == [0]


def test_mask_rcnn_with_sharpmask_generator(repo_root, tmp_path):
    torch.manual_seed(0)
    sm = "configs/shapes/sharpmask_R18_shapes.yaml"
    model, _ = build(repo_root, sm, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "")
    DetectionCheckpointer(model, str(tmp_path)).save("sharpmask")
    log = _train_net(
        repo_root, "--config-file", "configs/mask_rcnn_R50_FPN_sharpmask_generator.yaml",
        *ON_SHAPES, "MODEL.SEGMENT_PROPOSAL_GENERATOR.CONFIG_FILE", sm,
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS", str(tmp_path / "sharpmask.pth"),
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TRAIN", "100", "OUTPUT_DIR", str(tmp_path / "o"))
    assert "loss_mask" in log and "loss_rpn_cls" not in log
    assert _iterations(tmp_path / "o") == [0]


def test_faster_rcnn_with_deepmask_generator(repo_root, tmp_path):
    torch.manual_seed(0)
    model, _ = build(repo_root, DM)
    DetectionCheckpointer(model, str(tmp_path)).save("deepmask")
    log = _train_net(
        repo_root, "--config-file", "configs/faster_rcnn_R50_FPN_deepmask_generator.yaml",
        *ON_SHAPES, "MODEL.SEGMENT_PROPOSAL_GENERATOR.CONFIG_FILE", DM,
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS", str(tmp_path / "deepmask.pth"),
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TRAIN", "100", "OUTPUT_DIR", str(tmp_path / "o"))
    assert "loss_cls" in log and "loss_mask" not in log and "loss_rpn_cls" not in log
    assert _iterations(tmp_path / "o") == [0]
