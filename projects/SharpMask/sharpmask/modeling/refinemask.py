"""RefineMask (Zhang et al., CVPR 2021) for detectron2: a multi-stage Mask R-CNN mask head that
fuses fine-grained semantic features stage by stage (semantic fusion at 14, 28 and 56 px, each
followed by x2 upsampling; predictions at 14, 28, 56 and 112), trained with the boundary-aware
refinement (BAR) loss; as the official code builds it (zhanggang001/RefineMask,
refine_mask_head.py, refine_roi_head.py; REFERENCE.md section 4)."""
from typing import List

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, cat
from detectron2.modeling import ROI_HEADS_REGISTRY, ROI_MASK_HEAD_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.structures import BitMasks, Instances, PolygonMasks
from detectron2.utils.events import get_event_storage
from torch import nn

from .refinemask_boundary import bar_loss, merge_stages

# Keys under which RefineMaskROIHeads passes the semantic head's outputs to its mask branch.
SEMANTIC_FEATURES, SEMANTIC_LOGITS = "refinemask_semantic_features", "refinemask_semantic_logits"


def _upsample2(x, align_corners):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=align_corners)


class MultiBranchFusion(nn.Module):
    """(N, C, S, S) -> (N, C, S, S): three 3x3 conv + ReLU branches with dilations (1, 3, 5),
    summed, a 1x1 merge conv, ReLU."""

    def __init__(self, channels, dilations):
        super().__init__()
        self.branches = nn.ModuleList(
            Conv2d(channels, channels, 3, padding=d, dilation=d, activation=F.relu)
            for d in dilations)
        self.merge = Conv2d(channels, channels, 1, activation=F.relu)

    def forward(self, x):
        return self.merge(sum(branch(x) for branch in self.branches))


class ClassMaskPredictor(nn.Module):
    """A 1x1 conv to one logit map per class, evaluated only for each RoI's own class:
    (N, C, S, S) features and (N,) classes -> (N, S, S) logits (no N x classes x S x S map).
    Initialised as the official 1x1 conv (Kaiming normal, fan-out: std sqrt(2 / classes))."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, channels) * (2 / num_classes) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, features, classes):
        return torch.einsum("nchw,nc->nhw", features, self.weight[classes]) + \
            self.bias[classes][:, None, None]


class SemanticFusionStage(nn.Module):
    """One semantic fusion module (SFM) stage at size S (official `SFMStage`).

    forward((N, C, S, S) features, boxes, (N,) classes, (B, D, H/4, W/4) semantic features,
    (B, 1, H/4, W/4) semantic mask) -> ((N, S, S) mask logits of this stage,
    (N, C_out, 2S, 2S) features of the next stage). The semantic mask comes as the head
    passes it: sigmoid probabilities if `mask_use_sigmoid`, else logits, like this stage's mask.

    Concatenates the features; the semantic features (1x1 conv + ReLU, RoIAligned at S, 1x1
    conv + ReLU); this stage's mask and the RoIAligned semantic mask (sigmoids if
    `mask_use_sigmoid`). Then 1x1 conv + ReLU, multi-branch fusion, 1x1 conv to C_out - 2 +
    ReLU, bilinear x2, and the two masks (x2) concatenated again.
    """

    def __init__(self, channels, out_channels, semantic_dim, size, semantic_stride, num_classes,
                 dilations, mask_use_sigmoid):
        super().__init__()
        self.mask_use_sigmoid = mask_use_sigmoid
        self.semantic_in = Conv2d(semantic_dim, channels, 1, activation=F.relu)
        self.pooler = ROIPooler((size, size), (1.0 / semantic_stride,), 0, "ROIAlignV2")
        self.semantic_out = Conv2d(channels, channels, 1, activation=F.relu)
        self.predictor = ClassMaskPredictor(channels, num_classes)
        self.fuse = Conv2d(2 * channels + 2, channels, 1, activation=F.relu)
        self.fusion = MultiBranchFusion(channels, dilations)
        self.reduce = Conv2d(channels, out_channels - 2, 1, activation=F.relu)

    def forward(self, features, boxes, classes, semantic_features, semantic_mask):
        semantic = self.semantic_out(self.pooler([self.semantic_in(semantic_features)], boxes))
        logits = self.predictor(features, classes)
        mask = torch.sigmoid(logits[:, None]) if self.mask_use_sigmoid else logits[:, None]
        roi_semantic_mask = self.pooler([semantic_mask], boxes)
        fused = self.fusion(self.fuse(cat([features, semantic, mask, roi_semantic_mask], dim=1)))
        # The official ReLU after the upsampling is omitted: bilinear of ReLU outputs is >= 0.
        up = _upsample2(self.reduce(fused), align_corners=False)
        return logits, cat([up, _upsample2(mask, True), _upsample2(roi_semantic_mask, True)], 1)


class SemanticHead(nn.Module):
    """P2 (B, C, H/4, W/4) -> (semantic features (B, D, H/4, W/4), foreground logits
    (B, 1, H/4, W/4)): `num_convs` 3x3 convs + ReLU, then a 1x1 conv."""

    def __init__(self, in_channels, conv_dim, num_convs):
        super().__init__()
        self.convs = nn.Sequential(*[
            Conv2d(in_channels if i == 0 else conv_dim, conv_dim, 3, padding=1,
                   activation=F.relu) for i in range(num_convs)])
        self.predictor = Conv2d(conv_dim, 1, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                weight_init.c2_msra_fill(module)  # the official init, the predictor included

    def forward(self, p2):
        features = self.convs(p2)
        return features, self.predictor(features)


@ROI_MASK_HEAD_REGISTRY.register()
class RefineMaskHead(nn.Module):
    """Instance convs on the 14x14 RoI features, semantic fusion stages at 14, 28, 56, and a
    1x1 prediction at 112.

    forward(x: (N, C, 14, 14) pooled FPN features, instances, semantic_features (B, D, H/4,
    W/4), semantic_logits (B, 1, H/4, W/4)). Training returns {"loss_mask": BAR loss}; inference
    merges the finer stages into the coarser ones on their boundaries only and sets
    `pred_masks` (N, 1, 112, 112) probabilities on the instances.
    """

    @configurable
    def __init__(self, *, in_channels, pooler_resolution, num_classes, conv_dim,
                 num_instance_convs, stage_channels, semantic_dim, semantic_stride, dilations,
                 mask_use_sigmoid, stage_loss_weights, full_loss_stages, boundary_width,
                 merge_boundary_width, cls_agnostic=False):
        super().__init__()
        if len(stage_loss_weights) != len(stage_channels):
            raise ValueError(f"MODEL.REFINEMASK.STAGE_LOSS_WEIGHTS has "
                             f"{len(stage_loss_weights)} entries for "
                             f"{len(stage_channels)} stages (STAGE_CHANNELS)")
        if not 1 <= full_loss_stages <= len(stage_channels):
            raise ValueError(f"MODEL.REFINEMASK.FULL_LOSS_STAGES = {full_loss_stages}: use 1 .. "
                             f"{len(stage_channels)} (the number of stages)")
        self.num_classes = 1 if cls_agnostic else num_classes
        self.instance_convs = nn.Sequential(*[
            Conv2d(in_channels if i == 0 else conv_dim, stage_channels[0] if
                   i == num_instance_convs - 1 else conv_dim, 3, padding=1, activation=F.relu)
            for i in range(num_instance_convs)])
        self.stages = nn.ModuleList(
            SemanticFusionStage(stage_channels[k], stage_channels[k + 1], semantic_dim,
                                pooler_resolution * 2 ** k, semantic_stride, self.num_classes,
                                dilations, mask_use_sigmoid)
            for k in range(len(stage_channels) - 1))
        self.final_predictor = ClassMaskPredictor(stage_channels[-1], self.num_classes)
        self.mask_use_sigmoid = mask_use_sigmoid
        self.stage_loss_weights = list(stage_loss_weights)
        self.full_loss_stages = full_loss_stages
        self.boundary_width, self.merge_boundary_width = boundary_width, merge_boundary_width
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                weight_init.c2_msra_fill(module)

    @classmethod
    def from_config(cls, cfg, input_shape):
        rm = cfg.MODEL.REFINEMASK
        return {
            "in_channels": input_shape.channels, "pooler_resolution": input_shape.height,
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dim": rm.CONV_DIM, "num_instance_convs": rm.NUM_INSTANCE_CONVS,
            "stage_channels": rm.STAGE_CHANNELS, "semantic_dim": rm.SEMANTIC_CONV_DIM,
            "semantic_stride": 4, "dilations": rm.DILATIONS,
            "mask_use_sigmoid": rm.MASK_USE_SIGMOID,
            "stage_loss_weights": rm.STAGE_LOSS_WEIGHTS,
            "full_loss_stages": rm.FULL_LOSS_STAGES, "boundary_width": rm.BOUNDARY_WIDTH,
            "merge_boundary_width": rm.MERGE_BOUNDARY_WIDTH,
            "cls_agnostic": cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK,
        }

    def stage_logits(self, x, boxes, classes, semantic_features, semantic_logits):
        """The raw mask logits of every stage: [(N, 14, 14), (N, 28, 28), (N, 56, 56),
        (N, 112, 112)] for 14x14 RoI features."""
        features = self.instance_convs(x)
        semantic_mask = torch.sigmoid(semantic_logits) if self.mask_use_sigmoid \
            else semantic_logits
        logits = []
        for stage in self.stages:
            stage_logits, features = stage(features, boxes, classes, semantic_features,
                                           semantic_mask)
            logits.append(stage_logits)
        logits.append(self.final_predictor(features, classes))
        return logits

    def forward(self, x, instances: List[Instances], semantic_features, semantic_logits):
        boxes = [i.proposal_boxes if self.training else i.pred_boxes for i in instances]
        field = "gt_classes" if self.training else "pred_classes"
        if self.num_classes == 1 or not instances or not instances[0].has(field):
            classes = torch.zeros(sum(len(i) for i in instances), dtype=torch.long,
                                  device=x.device)
        else:
            classes = cat([i.get(field) for i in instances])
        logits = self.stage_logits(x, boxes, classes, semantic_features, semantic_logits)
        if self.training:
            if len(classes) == 0:
                return {"loss_mask": sum(s.sum() for s in logits) * 0.0}
            targets = [cat([i.gt_masks.crop_and_resize(i.proposal_boxes.tensor, s.shape[-1])
                            for i in instances]).to(s.dtype) for s in logits]
            loss, per_stage = bar_loss(logits, targets, self.stage_loss_weights,
                                       self.full_loss_stages, self.boundary_width,
                                       self.merge_boundary_width)
            storage = get_event_storage()
            for k, value in enumerate(per_stage):
                storage.put_scalar(f"refinemask/loss_stage{k}", value.item())
            return {"loss_mask": loss}
        merged = merge_stages(logits, self.full_loss_stages, self.merge_boundary_width)
        probs = torch.sigmoid(merged[-1])[:, None]
        for inst, p in zip(instances, probs.split([len(i) for i in instances])):
            inst.pred_masks = p
        return instances


def union_mask_targets(instances, padded_size, stride):
    """(B, 1, H/stride, W/stride) binary targets of the semantic head, as the official code
    makes them: the union of each image's ground-truth masks on the padded image, resized
    bilinearly to the semantic map's size and kept where >= 0.5."""
    targets = []
    for inst in instances:
        height, width = inst.image_size
        union = torch.zeros(padded_size, device=inst.gt_boxes.device)
        if inst.has("gt_masks") and len(inst.gt_masks):
            masks = inst.gt_masks
            if isinstance(masks, PolygonMasks):
                masks = BitMasks.from_polygon_masks(masks, height, width)
            union[:height, :width] = masks.tensor.any(dim=0).float()
        targets.append(union)
    size = (padded_size[0] // stride, padded_size[1] // stride)
    resized = F.interpolate(torch.stack(targets)[:, None], size=size, mode="bilinear",
                            align_corners=False)
    return (resized >= 0.5).float()


@ROI_HEADS_REGISTRY.register()
class RefineMaskROIHeads(StandardROIHeads):
    """StandardROIHeads whose mask branch is `RefineMaskHead`, plus the semantic head on P2
    (its loss: BCE against the union of all ground-truth masks of the image) and the box
    head's classification loss weighted by MODEL.ROI_BOX_HEAD.CLS_LOSS_WEIGHT (the official
    recipe weights both box losses by 2)."""

    @configurable
    def __init__(self, *, semantic_head, semantic_in_feature, semantic_loss_weight, **kwargs):
        super().__init__(**kwargs)
        self.semantic_head = semantic_head
        self.semantic_in_feature = semantic_in_feature
        self.semantic_loss_weight = semantic_loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        rm = cfg.MODEL.REFINEMASK
        if cfg.MODEL.ROI_MASK_HEAD.NAME != "RefineMaskHead":
            raise ValueError("RefineMaskROIHeads needs MODEL.ROI_MASK_HEAD.NAME RefineMaskHead, "
                             f"got {cfg.MODEL.ROI_MASK_HEAD.NAME}")
        shape = input_shape[rm.SEMANTIC_IN_FEATURE]
        if shape.stride != 4:
            raise ValueError(f"MODEL.REFINEMASK.SEMANTIC_IN_FEATURE {rm.SEMANTIC_IN_FEATURE} "
                             f"has stride {shape.stride}; RefineMask's semantic head reads P2 "
                             "(stride 4)")
        box = cfg.MODEL.ROI_BOX_HEAD
        ret["box_predictor"] = FastRCNNOutputLayers(
            cfg, ret["box_head"].output_shape,
            loss_weight={"loss_cls": box.CLS_LOSS_WEIGHT, "loss_box_reg": box.BBOX_REG_LOSS_WEIGHT})
        ret.update(semantic_head=SemanticHead(shape.channels, rm.SEMANTIC_CONV_DIM,
                                              rm.NUM_SEMANTIC_CONVS),
                   semantic_in_feature=rm.SEMANTIC_IN_FEATURE,
                   semantic_loss_weight=rm.SEMANTIC_LOSS_WEIGHT)
        return ret

    def _with_semantic(self, features):
        """The backbone features plus the semantic head's features and logits."""
        semantic_features, semantic_logits = self.semantic_head(
            features[self.semantic_in_feature])
        return {**features, SEMANTIC_FEATURES: semantic_features, SEMANTIC_LOGITS: semantic_logits}

    def forward(self, images, features, proposals, targets=None):
        features = self._with_semantic(features)
        instances, losses = super().forward(images, features, proposals, targets)
        if self.training and self.mask_on:
            semantic_logits = features[SEMANTIC_LOGITS]
            padded = tuple(4 * v for v in semantic_logits.shape[-2:])
            losses["loss_semantic"] = self.semantic_loss_weight * \
                F.binary_cross_entropy_with_logits(semantic_logits,
                                                   union_mask_targets(targets, padded, 4))
        return instances, losses

    def forward_with_given_boxes(self, features, instances):
        """Masks for given boxes (e.g. ground-truth ones), from the backbone features alone."""
        if SEMANTIC_FEATURES not in features:
            features = self._with_semantic(features)
        return super().forward_with_given_boxes(features, instances)

    def _forward_mask(self, features, instances):
        if not self.mask_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        pooled = self.mask_pooler([features[f] for f in self.mask_in_features], boxes)
        return self.mask_head(pooled, instances, features[SEMANTIC_FEATURES],
                              features[SEMANTIC_LOGITS])
