"""Our proposal networks as detectron2 proposal generators, in place of the RPN.

The generator holds a frozen, trained DeepMask, SharpMask or InstanceFCN (its own config file
and weights) and runs it on the detector's input images. Those arrive normalised with the
detector's pixel mean/std, in the detector's channel order, padded to the backbone's size
divisibility, and resized to the detector's input size; the generator undoes all four before
the network builds its own scale pyramid, which is relative to the image it is given: offline
(tools/dump_proposals.py, INPUT.MIN_SIZE_TEST 0) that is the original image. Undoing the resize
needs each image's original size, which `SegmentProposalRCNN` passes along; a plain
GeneralizedRCNN does not, and its generator sees the resized image (on `shapes`, where that
shrinks objects up to 2x, the online Fast R-CNN lost most of its AP: docs/detectors.md).
"""
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import configurable, get_cfg
from detectron2.modeling import (META_ARCH_REGISTRY, PROPOSAL_GENERATOR_REGISTRY,
                                 GeneralizedRCNN, build_model)
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
        self.register_load_state_dict_pre_hook(_keep_network_missing_from_checkpoint)

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
        originals = getattr(images, "original_sizes", None) or [None] * len(images)
        proposals = []
        for tensor, size, original in zip(images.tensor, images.image_sizes, originals):
            raw = self.detector_image_to_raw(tensor, size)
            resized = original is not None and tuple(original) != tuple(size)
            if resized:  # the network's input offline: the image at its original size
                raw = F.interpolate(raw[None], size=tuple(original), mode="bilinear",
                                    align_corners=False)[0]
            if self.nms_thresh < 1.0:  # the offline protocol: the network's own top k, NMS, k
                out = self.network.propose(raw)
                out = out[nms_top_k(out.proposal_boxes.tensor, out.objectness_logits,
                                    self.nms_thresh, top_k)]
            else:
                out = self.network.propose(raw, top_k=top_k)
            boxes = out.proposal_boxes
            if resized:
                boxes.scale(size[1] / original[1], size[0] / original[0])
            boxes.clip(size)
            keep = boxes.nonempty(threshold=self.min_box_size)
            result = Instances(size)
            result.proposal_boxes = boxes[keep]
            result.objectness_logits = out.objectness_logits[keep]
            proposals.append(result)
        return proposals, {}


def _keep_network_missing_from_checkpoint(module, state_dict, prefix, *args):
    """A detector checkpoint without the generator's network (MODEL.WEIGHTS = ImageNet weights,
    a backbone) leaves the network as loaded from its own WEIGHTS. Without this, detectron2's
    FrozenBatchNorm2d fills the running mean and variance missing from a checkpoint without
    version metadata with 0 and 1: the network's frozen statistics were silently erased and its
    proposals became noise (the online SharpMask row of make detect-demo: 10.0 box AP against
    27.6 offline)."""
    network = prefix + "network."
    if not any(k.startswith(network) for k in state_dict):
        state_dict.update({network + k: v for k, v in module.network.state_dict().items()})


@PROPOSAL_GENERATOR_REGISTRY.register()
class DeepMaskProposalGenerator(SegmentProposalGenerator):
    expected_meta_architecture = "DeepMask"


@PROPOSAL_GENERATOR_REGISTRY.register()
class SharpMaskProposalGenerator(SegmentProposalGenerator):
    expected_meta_architecture = "SharpMask"


@PROPOSAL_GENERATOR_REGISTRY.register()
class InstanceFCNProposalGenerator(SegmentProposalGenerator):
    expected_meta_architecture = "InstanceFCN"


@META_ARCH_REGISTRY.register()
class SegmentProposalRCNN(GeneralizedRCNN):
    """GeneralizedRCNN whose images carry each one's original size (the dataset dict's
    "height" and "width") to the proposal generator, so that DeepMask, SharpMask or
    InstanceFCN in place of the RPN runs at the scale of its offline proposals."""

    def preprocess_image(self, batched_inputs):
        images = super().preprocess_image(batched_inputs)
        images.original_sizes = [(x["height"], x["width"]) if "height" in x and "width" in x
                                 else None for x in batched_inputs]
        return images
