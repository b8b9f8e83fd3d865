"""The COCO detector configs on our proposals build and train one iteration on shapes data;
the shapes Mask R-CNN configs with our networks as proposal generators train and test."""
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.utils.events import EventStorage

from model_helpers import build, load_cfg
from proposal_file_helpers import hand_written_proposal_file, proposals_at_roi_heads
from sharpmask.engine import Trainer, check_config
from test_dump_proposals import DM
from test_train_net import _iterations, _train_net

ON_SHAPES = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", "8",
             "INPUT.MASK_FORMAT", "bitmask", "INPUT.MIN_SIZE_TRAIN", "(256,)",
             "INPUT.MAX_SIZE_TRAIN", "384", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "1",
             "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()",
             "DATASETS.TRAIN", "('shapes_val_mini',)"]


def test_fast_rcnn_coco_config_trains_on_a_proposal_file(repo_root, tmp_path):
    """configs/fast_rcnn_R50_FPN_deepmask_proposals.yaml on shapes data, with a hand-written
    proposal file (12 boxes per image): the RoI heads receive each image's boxes of the file,
    best first, scaled to the resized image, and one step trains the box head on them."""
    path = tmp_path / "hand.pkl"
    by_id = hand_written_proposal_file(path, "shapes_val_mini")
    cfg = load_cfg(repo_root, "configs/fast_rcnn_R50_FPN_deepmask_proposals.yaml", *ON_SHAPES,
                   "DATASETS.PROPOSAL_FILES_TRAIN", f"('{path}',)", "INPUT.RANDOM_FLIP", "none")
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).train()
    batch = next(iter(Trainer.build_train_loader(cfg)))
    received = proposals_at_roi_heads(model, batch)
    for x, proposals in zip(batch, received):
        boxes, logits = by_id[x["image_id"]]
        height, width = x["image"].shape[-2:]
        factors = np.array([width / x["width"], height / x["height"]] * 2, np.float32)
        np.testing.assert_allclose(proposals.proposal_boxes.tensor.numpy(),
                                   boxes[np.argsort(-logits)] * factors, rtol=1e-5, atol=1e-3)
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0


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


@pytest.mark.parametrize("network", ["deepmask", "sharpmask", "instancefcn"])
def test_shapes_mask_rcnn_with_each_generator_trains_and_infers(repo_root, tmp_path, network):
    """configs/shapes/mask_rcnn_R18_FPN_shapes_<network>_generator.yaml: one training step with
    the (untrained, frozen) network's proposals in place of the RPN, which it does not have,
    then inference on an image: boxes, classes and full-resolution masks."""
    torch.manual_seed(0)
    config = f"configs/shapes/{network}_R18_shapes.yaml"
    model, _ = build(repo_root, config, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "")
    DetectionCheckpointer(model, str(tmp_path)).save(network)
    cfg = load_cfg(repo_root, f"configs/shapes/mask_rcnn_R18_FPN_shapes_{network}_generator.yaml",
                   *ON_SHAPES, "MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS",
                   str(tmp_path / f"{network}.pth"), "MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TEST",
                   "50", "OUTPUT_DIR", str(tmp_path))
    check_config(cfg, training=True)
    trainer = Trainer(cfg)
    assert type(trainer.model.proposal_generator).__name__.lower() == \
        f"{network}proposalgenerator"
    trainer.train()
    assert _iterations(tmp_path) == [0]
    record = DatasetCatalog.get("shapes_val_mini")[0]
    detector = trainer.model.eval()
    with torch.no_grad():
        instances = detector([DatasetMapper(cfg, is_train=False)(record)])[0]["instances"]
    assert len(instances) > 0
    assert instances.pred_masks.shape[1:] == (record["height"], record["width"])


def test_online_sharpmask_fast_rcnn_trains_and_infers(repo_root, tmp_path):
    """configs/shapes/fast_rcnn_R18_FPN_shapes_sharpmask_online.yaml: the offline SharpMask
    Fast R-CNN with its proposals computed online (box NMS at 0.7, as the files): one step
    trains the box head only (backbone frozen), then inference gives boxes and classes."""
    torch.manual_seed(0)
    sm = "configs/shapes/sharpmask_R18_shapes.yaml"
    model, _ = build(repo_root, sm, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "")
    DetectionCheckpointer(model, str(tmp_path)).save("sharpmask")
    cfg = load_cfg(repo_root, "configs/shapes/fast_rcnn_R18_FPN_shapes_sharpmask_online.yaml",
                   *ON_SHAPES, "MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS",
                   str(tmp_path / "sharpmask.pth"), "OUTPUT_DIR", str(tmp_path))
    check_config(cfg, training=True)
    trainer = Trainer(cfg)
    generator = trainer.model.proposal_generator
    assert generator.nms_thresh == 0.7 and generator.topk_train == 1000
    backbone = {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}
    trainer.train()
    assert all(torch.equal(v, backbone[k]) for k, v in trainer.model.backbone.state_dict().items())
    record = DatasetCatalog.get("shapes_val_mini")[0]
    with torch.no_grad():
        instances = trainer.model.eval()([DatasetMapper(cfg, is_train=False)(record)])[0]
    assert len(instances["instances"]) > 0 and not instances["instances"].has("pred_masks")

