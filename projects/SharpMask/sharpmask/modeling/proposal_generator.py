"""Our proposal networks as detectron2 proposal generators, in place of the RPN.

The generator holds a frozen, trained DeepMask, SharpMask or InstanceFCN (its own config file
and weights) and runs it on the detector's input images. Those arrive normalised with the
detector's pixel mean/std, in the detector's channel order, and padded to the backbone's size
divisibility; the generator undoes all three before the network builds its own scale pyramid.
"""
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import configurable, get_cfg
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY, build_model
from detectron2.structures import Instances
from torch import nn

from ..config import add_sharpmask_config
from ..data.proposal_protocol import nms_top_k


class SegmentProposalGenerator(nn.Module):
    """Proposals (boxes and objectness logits) of a frozen segment-proposal network."""

    expected_meta_architecture = None

    @configurable
    def __init__(self, *, network, network_format, detector_format, detector_pixel_mean,
                 detector_pixel_std, topk_train, topk_test, min_box_size=0.0, nms_thresh=1.0):
        super().__init__()
        self.network = network.eval()
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.flip_channels = network_format != detector_format
        self.register_buffer("detector_mean", torch.tensor(detector_pixel_mean).view(-1, 1, 1),
                             False)
        self.register_buffer("detector_std", torch.tensor(detector_pixel_std).view(-1, 1, 1),
                             False)
        self.topk_train, self.topk_test = topk_train, topk_test
        self.min_box_size = min_box_size
        self.nms_thresh = nms_thresh

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        opts = cfg.MODEL.SEGMENT_PROPOSAL_GENERATOR
        if not opts.CONFIG_FILE:
            raise ValueError("MODEL.SEGMENT_PROPOSAL_GENERATOR.CONFIG_FILE must name the config "
                             "of the trained proposal network")
        net_cfg = get_cfg()
        add_sharpmask_config(net_cfg)
        net_cfg.merge_from_file(opts.CONFIG_FILE)
        net_cfg.merge_from_list(["MODEL.DEVICE", cfg.MODEL.DEVICE, "MODEL.WEIGHTS", opts.WEIGHTS,
                                 "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", ""])
        if net_cfg.MODEL.META_ARCHITECTURE != cls.expected_meta_architecture:
            raise ValueError(
                f"{cls.__name__} needs a {cls.expected_meta_architecture} config, but "
                f"{opts.CONFIG_FILE} has MODEL.META_ARCHITECTURE "
                f"{net_cfg.MODEL.META_ARCHITECTURE}")
        network = build_model(net_cfg)
        if not opts.WEIGHTS:
            raise ValueError("MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS must name the trained "
                             "proposal network's checkpoint")
        DetectionCheckpointer(network).load(opts.WEIGHTS)
        return {
            "network": network, "network_format": net_cfg.INPUT.FORMAT,
            "detector_format": cfg.INPUT.FORMAT, "detector_pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "detector_pixel_std": cfg.MODEL.PIXEL_STD, "topk_train": opts.TOPK_TRAIN,
            "topk_test": opts.TOPK_TEST, "min_box_size": opts.MIN_BOX_SIZE,
            "nms_thresh": opts.NMS_THRESH,
        }

    def train(self, mode=True):
        super().train(mode)
        self.network.eval()  # frozen: always in inference mode
        return self

    def detector_image_to_raw(self, tensor, image_size):
        """(C, Hpad, Wpad) normalised, padded detector input -> (C, H, W) pixel values in the
        proposal network's channel order."""
        h, w = image_size
        raw = tensor[:, :h, :w] * self.detector_std + self.detector_mean
        return raw.flip(0) if self.flip_channels else raw

    @torch.no_grad()
    def forward(self, images, features=None, gt_instances=None):
        top_k = self.topk_train if self.training else self.topk_test
        proposals = []
        for tensor, size in zip(images.tensor, images.image_sizes):
            raw = self.detector_image_to_raw(tensor, size)
            if self.nms_thresh < 1.0:  # the offline protocol: the network's own top k, NMS, k
                out = self.network.propose(raw)
                out = out[nms_top_k(out.proposal_boxes.tensor, out.objectness_logits,
                                    self.nms_thresh, top_k)]
            else:
                out = self.network.propose(raw, top_k=top_k)
            boxes = out.proposal_boxes
            boxes.clip(size)
            keep = boxes.nonempty(threshold=self.min_box_size)
            result = Instances(size)
            result.proposal_boxes = boxes[keep]
            result.objectness_logits = out.objectness_logits[keep]
            proposals.append(result)
        return proposals, {}


@PROPOSAL_GENERATOR_REGISTRY.register()
class DeepMaskProposalGenerator(SegmentProposalGenerator):
    expected_meta_architecture = "DeepMask"


@PROPOSAL_GENERATOR_REGISTRY.register()
class SharpMaskProposalGenerator(SegmentProposalGenerator):
    expected_meta_architecture = "SharpMask"


@PROPOSAL_GENERATOR_REGISTRY.register()
class InstanceFCNProposalGenerator(SegmentProposalGenerator):
    expected_meta_architecture = "InstanceFCN"
