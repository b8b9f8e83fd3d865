"""InstanceFCN (Dai et al., ECCV 2016): instance-sensitive score maps assembled into segment
proposals, trained image-centric and applied densely over a scale pyramid."""
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage

from .deepmask_weights import load_deepmask_trunk
from .dense_inference import PyramidLevel, dense_proposals, pyramid_geometry, resize_and_pad
from .dilated_trunk import STRIDE, build_dilated_trunk
from .instancefcn_head import InstanceFCNHead, assemble
from .proposal_network import SegmentProposalNetwork, inference_dtype


@META_ARCH_REGISTRY.register()
class InstanceFCN(SegmentProposalNetwork):
    """Class-agnostic segment proposals from k^2 instance-sensitive score maps at stride 8.

    Training input: `InstanceFCNDatasetMapper` dicts (whole images with sampled windows);
    returns {"loss_mask", "loss_objectness"}: the two terms of the paper's eq. (1), a sum over
    the sampled windows of the objectness logistic loss and of the per-cell logistic loss
    summed over each positive's in-map cells, both divided by the constant
    `windows_per_image` x images. With `balance_objectness`, positives and negatives weigh as
    many windows each (images rarely have the 128 positives that a 1:1 sample of 256 needs:
    `shapes` has ~2.7).

    Inference input: detectron2's test format; returns per image {"proposals": Instances} with
    proposal_boxes, objectness_logits and proposal_masks (WindowedMasks), best first: windows
    of all scales ranked by objectness, assembled, binarised, NMS on their masks' tight boxes.
    """

    @configurable
    def __init__(self, *, trunk, head, window_cells, pixel_mean, pixel_std, test_scales,
                 test_max_size, pre_nms_top_k, top_k, mask_threshold, nms_threshold,
                 decode_batch_size, windows_per_image, mask_loss_weight=1.0,
                 objectness_loss_weight=1.0, balance_objectness=True, inference_dtype=None):
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std,
                         inference_dtype=inference_dtype)
        self.trunk, self.head = trunk, head
        self.k, self.window_cells = head.k, window_cells
        self.test_scales, self.test_max_size = list(test_scales), test_max_size
        self.pre_nms_top_k, self.top_k = pre_nms_top_k, top_k
        self.mask_threshold, self.nms_threshold = mask_threshold, nms_threshold
        self.decode_batch_size = decode_batch_size
        self.balance_objectness = balance_objectness
        self.windows_per_image = windows_per_image
        self.mask_loss_weight, self.objectness_loss_weight = mask_loss_weight, \
            objectness_loss_weight

    @classmethod
    def from_config(cls, cfg):
        opts = cfg.MODEL.INSTANCEFCN
        if opts.WINDOW_CELLS < opts.K:
            raise ValueError(f"MODEL.INSTANCEFCN.WINDOW_CELLS ({opts.WINDOW_CELLS}) must be at "
                             f"least MODEL.INSTANCEFCN.K ({opts.K}): every sub-window needs a cell")
        trunk = build_dilated_trunk(cfg)
        if opts.DEEPMASK_TRUNK_WEIGHTS and not cfg.MODEL.WEIGHTS:
            load_deepmask_trunk(trunk, opts.DEEPMASK_TRUNK_WEIGHTS)
        head = InstanceFCNHead(trunk.output_shape()["res4"].channels, opts.K, opts.HIDDEN_DIM)
        return {
            "trunk": trunk, "head": head, "window_cells": opts.WINDOW_CELLS,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD,
            "test_scales": opts.TEST_SCALES, "test_max_size": opts.TEST_MAX_SIZE,
            "pre_nms_top_k": opts.TEST_PRE_NMS_TOPK, "top_k": opts.TEST_TOPK,
            "mask_threshold": opts.MASK_THRESHOLD, "nms_threshold": opts.NMS_THRESH,
            "decode_batch_size": opts.DECODE_BATCH_SIZE, "inference_dtype": inference_dtype(cfg),
            "windows_per_image": cfg.INPUT.INSTANCEFCN.WINDOWS_PER_IMAGE,
            "mask_loss_weight": opts.MASK_LOSS_WEIGHT,
            "objectness_loss_weight": opts.OBJECTNESS_LOSS_WEIGHT,
            "balance_objectness": opts.BALANCE_OBJECTNESS,
        }

    def score_maps(self, images):
        """(B, C, H, W) normalised, H and W multiples of 8 -> ((B, k^2, H/8, W/8) instance
        logits, (B, H/8, W/8) objectness logits)."""
        return self.head(self.trunk(images)["res4"])

    # ---------------------------------------------------------------- image-centric training
    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        logits, labels, mask_logits, mask_valid, targets = [], [], [], [], []
        for x in batched_inputs:
            # One image at a time: a batch's images come at scales up to 2^3.5 apart, and
            # padding them all to the largest cost 2-3x the compute (shapes, batch of 4).
            image = ImageList.from_tensors([self.normalize(x["image"])], STRIDE).tensor
            maps, objectness = (t[0] for t in self.score_maps(image))
            cells = x["window_cells"].to(self.device)
            window_labels = x["window_labels"].to(self.device)
            logits.append(objectness[cells[:, 0], cells[:, 1]])
            labels.append(window_labels)
            positive = cells[window_labels > 0]
            assembled, valid = assemble(maps, positive[:, 0], positive[:, 1], self.k,
                                        self.window_cells)
            mask_logits.append(assembled)
            mask_valid.append(valid)
            targets.append(x["window_masks"].to(self.device).float())
        logits, labels = torch.cat(logits), torch.cat(labels)
        mask_logits, mask_valid = torch.cat(mask_logits), torch.cat(mask_valid)
        targets = torch.cat(targets)
        storage = get_event_storage()
        normalizer = self.windows_per_image * len(batched_inputs)  # eq. (1)'s sum, scaled
        if len(logits):
            loss_objectness = F.binary_cross_entropy_with_logits(
                logits, labels, weight=self.objectness_weights(labels),
                reduction="sum") / normalizer
            correct = ((logits.detach() > 0).float() == labels).float()
            for name, kind in (("positive", labels > 0), ("negative", labels == 0)):
                if kind.any():
                    storage.put_scalar(f"instancefcn/{name}_accuracy", correct[kind].mean().item())
        else:  # keeps every parameter in the graph for DDP
            loss_objectness = objectness.sum() * 0.0
        if mask_valid.any():
            per_cell = F.binary_cross_entropy_with_logits(mask_logits, targets, reduction="none")
            loss_mask = per_cell[mask_valid].sum() / normalizer
            predicted, truth = (mask_logits.detach() > 0) & mask_valid, targets > 0
            inter = (predicted & truth).flatten(1).sum(1)
            union = (predicted | truth).flatten(1).sum(1).clamp(min=1)
            storage.put_scalar("instancefcn/window_mask_iou", (inter / union).mean().item())
        else:
            loss_mask = maps.sum() * 0.0
        storage.put_scalar("instancefcn/positives_per_image",
                           len(mask_logits) / len(batched_inputs))
        return {"loss_mask": self.mask_loss_weight * loss_mask,
                "loss_objectness": self.objectness_loss_weight * loss_objectness}

    def objectness_weights(self, labels):
        """(n,) weights summing to n: 1 each, or n / 2 for the positives together and n / 2
        for the negatives when both are present and `balance_objectness` is set."""
        n, positives = len(labels), int((labels > 0).sum())
        if not self.balance_objectness or positives in (0, n):
            return torch.ones_like(labels)
        return torch.where(labels > 0, 0.5 * n / positives, 0.5 * n / (n - positives))

    # ---------------------------------------------------------------- dense inference
    def level_maps(self, image, factor):
        """Score maps of one pyramid level: (PyramidLevel of objectness, (k^2, h, w) maps)."""
        height, width = image.shape[-2:]
        scale = min(factor, self.test_max_size / max(height, width)) if self.test_max_size \
            else factor
        size, (sx, sy), padded = pyramid_geometry(height, width, scale, 0, STRIDE, STRIDE)
        maps, objectness = self.score_maps(resize_and_pad(image, size, padded, 0))
        return PyramidLevel(sx, sy, padded, objectness[0]), maps[0]

    def propose_windows(self, image, top_k=None):
        """Dense multi-scale inference of `propose` (top_k default: MODEL.INSTANCEFCN.TEST_TOPK)."""
        normalized = self.normalize(image)
        levels, maps = zip(*[self.level_maps(normalized, s) for s in self.test_scales])
        m = self.window_cells

        def decode(li, rows, cols):
            return torch.sigmoid(assemble(maps[li], rows, cols, self.k, m)[0])

        candidates = self.pre_nms_top_k or sum(level.scores.numel() for level in levels)
        return dense_proposals(
            list(levels), decode, tuple(image.shape[-2:]), stride=STRIDE, window=m * STRIDE,
            pad=0, top_k=candidates, mask_threshold=self.mask_threshold,
            nms_threshold=self.nms_threshold, batch_size=self.decode_batch_size,
            cell_offset=m // 2, max_proposals=top_k or self.top_k,
        )
