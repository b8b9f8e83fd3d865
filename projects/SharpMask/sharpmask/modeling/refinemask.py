"""RefineMask (Zhang et al., CVPR 2021) for detectron2: a multi-stage Mask R-CNN mask head that
fuses fine-grained semantic features stage by stage, 14 -> 28 -> 56 -> 112, trained with the
boundary-aware refinement (BAR) loss. REFERENCE.md section 4."""
from typing import List

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, cat
from detectron2.modeling import ROI_HEADS_REGISTRY, ROI_MASK_HEAD_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.structures import BitMasks, Instances, PolygonMasks
from detectron2.utils.events import get_event_storage
from torch import nn

# Keys under which RefineMaskROIHeads passes the semantic head's outputs to its mask branch.
SEMANTIC_FEATURES, SEMANTIC_LOGITS = "refinemask_semantic_features", "refinemask_semantic_logits"


def boundary_band(masks, width):
    """(N, H, W) bool -> (N, H, W) bool: pixels with a pixel of the other value within
    Chebyshev distance `width` (pixels outside the mask grid do not count)."""
    x = masks.float()[:, None]
    size = 2 * width + 1
    grown = F.max_pool2d(x, size, stride=1, padding=width)
    shrunk = -F.max_pool2d(-x, size, stride=1, padding=width)
    return (grown != shrunk)[:, 0]


def bar_loss(stage_logits, targets, stage_weights, full_stages, width):
    """The boundary-aware refinement loss.

    Args:
        stage_logits: per stage (N, S_k, S_k) mask logits, S_k doubling each stage.
        targets: per stage (N, S_k, S_k) float targets.
        full_stages: the first stages use BCE on every pixel; later stages only inside the
            band of `width` around the target's boundary and the previous stage's predicted
            boundary (upsampled x2, binarised at 0.5), averaged over the band's pixels.
    Returns:
        (sum_k weight_k * loss_k, [loss_k]).
    """
    losses = []
    for k, (logits, target) in enumerate(zip(stage_logits, targets)):
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if k < full_stages:
            losses.append(per_pixel.mean())
            continue
        previous = F.interpolate(stage_logits[k - 1].detach()[:, None], size=logits.shape[-2:],
                                 mode="bilinear", align_corners=False)[:, 0] > 0
        band = boundary_band(target > 0.5, width) | boundary_band(previous, width)
        losses.append(per_pixel[band].sum() / band.sum().clamp(min=1))
    total = sum(w * loss for w, loss in zip(stage_weights, losses))
    return total, losses


class MultiBranchFusion(nn.Module):
    """Three 3x3 convs with dilations (1, 3, 5) on the same input, summed, then ReLU."""

    def __init__(self, channels, dilations):
        super().__init__()
        self.branches = nn.ModuleList(
            Conv2d(channels, channels, 3, padding=d, dilation=d) for d in dilations)

    def forward(self, x):
        return F.relu(sum(branch(x) for branch in self.branches))


class SemanticHead(nn.Module):
    """P2 (B, C, H/4, W/4) -> (semantic features (B, D, H/4, W/4), foreground logits
    (B, 1, H/4, W/4)): `num_convs` 3x3 convs + ReLU, then a 1x1 conv."""

    def __init__(self, in_channels, conv_dim, num_convs):
        super().__init__()
        self.convs = nn.Sequential(*[
            Conv2d(in_channels if i == 0 else conv_dim, conv_dim, 3, padding=1,
                   activation=F.relu) for i in range(num_convs)])
        self.predictor = Conv2d(conv_dim, 1, 1)
        for conv in self.convs:
            weight_init.c2_msra_fill(conv)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, p2):
        features = self.convs(p2)
        return features, self.predictor(features)


class ClassMaskPredictor(nn.Module):
    """1x1 conv to one logit map per class, evaluated only for each RoI's own class:
    (N, C, S, S) features and (N,) classes -> (N, S, S) logits (no N x classes x S x S map)."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, channels))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.normal_(self.weight, std=0.001)

    def forward(self, features, classes):
        return torch.einsum("nchw,nc->nhw", features, self.weight[classes]) + \
            self.bias[classes][:, None, None]


@ROI_MASK_HEAD_REGISTRY.register()
class RefineMaskHead(nn.Module):
    """Instance branch on 14x14 RoI features, then semantic fusion stages at 28, 56, 112.

    forward(x: (N, C, 14, 14) pooled FPN features, instances, semantic_features (B, D, H/4,
    W/4), semantic_logits (B, 1, H/4, W/4)). Training returns {"loss_mask": BAR loss}; inference
    sets `pred_masks` (N, 1, 112, 112) probabilities on the instances.

    Stage k (size S_k = 14 * 2^k, channels C_k): the previous stage's features (1x1 conv to C_k,
    bilinear x2), the semantic features reduced to C_k and RoIAligned at S_k, the previous mask
    (sigmoid, x2) and the semantic mask (sigmoid, RoIAligned at S_k) are concatenated, fused by
    a 1x1 conv and a multi-branch fusion block, and predict the class's mask at S_k.
    """

    @configurable
    def __init__(self, *, in_channels, pooler_resolution, num_classes, conv_dim,
                 num_instance_convs, stage_channels, semantic_dim, semantic_stride, dilations,
                 stage_loss_weights, full_loss_stages, boundary_width, cls_agnostic=False):
        super().__init__()
        self.num_classes = 1 if cls_agnostic else num_classes
        self.instance_convs = nn.Sequential(*[
            Conv2d(in_channels if i == 0 else conv_dim, stage_channels[0] if
                   i == num_instance_convs - 1 else conv_dim, 3, padding=1, activation=F.relu)
            for i in range(num_instance_convs)])
        self.predictors = nn.ModuleList([ClassMaskPredictor(stage_channels[0], self.num_classes)])
        self.instance_reduce, self.semantic_reduce = nn.ModuleList(), nn.ModuleList()
        self.fuse, self.fusion_blocks, self.semantic_poolers = nn.ModuleList(), nn.ModuleList(), []
        for k in range(1, len(stage_channels)):
            c = stage_channels[k]
            self.instance_reduce.append(Conv2d(stage_channels[k - 1], c, 1, activation=F.relu))
            self.semantic_reduce.append(Conv2d(semantic_dim, c, 1, activation=F.relu))
            self.fuse.append(Conv2d(2 * c + 2, c, 1, activation=F.relu))
            self.fusion_blocks.append(MultiBranchFusion(c, dilations))
            self.predictors.append(ClassMaskPredictor(c, self.num_classes))
            size = pooler_resolution * 2 ** k
            self.semantic_poolers.append(ROIPooler((size, size), (1.0 / semantic_stride,), 0,
                                                   "ROIAlignV2"))
        self.stage_loss_weights = list(stage_loss_weights)
        self.full_loss_stages, self.boundary_width = full_loss_stages, boundary_width
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                weight_init.c2_msra_fill(module)
        if len(self.stage_loss_weights) != len(stage_channels):
            raise ValueError(f"MODEL.REFINEMASK.STAGE_LOSS_WEIGHTS has "
                             f"{len(self.stage_loss_weights)} entries for "
                             f"{len(stage_channels)} stages (STAGE_CHANNELS)")

    @classmethod
    def from_config(cls, cfg, input_shape):
        rm = cfg.MODEL.REFINEMASK
        return {
            "in_channels": input_shape.channels, "pooler_resolution": input_shape.height,
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dim": rm.CONV_DIM, "num_instance_convs": rm.NUM_INSTANCE_CONVS,
            "stage_channels": rm.STAGE_CHANNELS, "semantic_dim": rm.SEMANTIC_CONV_DIM,
            "semantic_stride": 4, "dilations": rm.DILATIONS,
            "stage_loss_weights": rm.STAGE_LOSS_WEIGHTS,
            "full_loss_stages": rm.FULL_LOSS_STAGES, "boundary_width": rm.BOUNDARY_WIDTH,
            "cls_agnostic": cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK,
        }

    def stages(self, x, boxes, classes, semantic_features, semantic_logits, refine_boundary):
        """Mask logits of every stage: [(N, 14, 14), (N, 28, 28), (N, 56, 56), (N, 112, 112)].
        With `refine_boundary` (inference), from the third stage on only the previous mask's
        boundary band takes the new values; the returned maps are then already merged."""
        features = self.instance_convs(x)
        logits = [self.predictors[0](features, classes)]
        semantic_mask = torch.sigmoid(semantic_logits)
        for k in range(1, len(self.predictors)):
            features = F.interpolate(self.instance_reduce[k - 1](features), scale_factor=2,
                                     mode="bilinear", align_corners=False)
            previous = F.interpolate(logits[-1][:, None], scale_factor=2, mode="bilinear",
                                     align_corners=False)
            pooler = self.semantic_poolers[k - 1]
            semantic = pooler([self.semantic_reduce[k - 1](semantic_features)], boxes)
            fused = self.fuse[k - 1](cat([features, semantic, torch.sigmoid(previous),
                                          pooler([semantic_mask], boxes)], dim=1))
            features = self.fusion_blocks[k - 1](fused)
            stage = self.predictors[k](features, classes)
            if refine_boundary and k >= self.full_loss_stages:
                band = boundary_band(previous[:, 0] > 0, self.boundary_width)
                stage = torch.where(band, stage, previous[:, 0])
            logits.append(stage)
        return logits

    def forward(self, x, instances: List[Instances], semantic_features, semantic_logits):
        boxes = [i.proposal_boxes if self.training else i.pred_boxes for i in instances]
        field = "gt_classes" if self.training else "pred_classes"
        if self.num_classes == 1 or not instances or not instances[0].has(field):
            classes = torch.zeros(sum(len(i) for i in instances), dtype=torch.long,
                                  device=x.device)
        else:
            classes = cat([i.get(field) for i in instances])
        logits = self.stages(x, boxes, classes, semantic_features, semantic_logits,
                             refine_boundary=not self.training)
        if self.training:
            if len(classes) == 0:
                return {"loss_mask": sum(s.sum() for s in logits) * 0.0}
            targets = [cat([i.gt_masks.crop_and_resize(i.proposal_boxes.tensor, s.shape[-1])
                            for i in instances]).to(s.dtype) for s in logits]
            loss, per_stage = bar_loss(logits, targets, self.stage_loss_weights,
                                       self.full_loss_stages, self.boundary_width)
            storage = get_event_storage()
            for k, value in enumerate(per_stage):
                storage.put_scalar(f"refinemask/loss_stage{k}", value.item())
            return {"loss_mask": loss}
        probs = torch.sigmoid(logits[-1])[:, None]
        for inst, p in zip(instances, probs.split([len(i) for i in instances])):
            inst.pred_masks = p
        return instances


def union_mask_targets(instances, padded_size, stride):
    """(B, 1, H/stride, W/stride): the fraction of each stride x stride cell of the padded
    image covered by any ground-truth mask of that image."""
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
    return F.avg_pool2d(torch.stack(targets)[:, None], stride)


@ROI_HEADS_REGISTRY.register()
class RefineMaskROIHeads(StandardROIHeads):
    """StandardROIHeads whose mask branch is `RefineMaskHead`, plus the semantic head on P2
    (its loss: BCE against the union of all ground-truth masks of the image, stride-4 cells
    given their covered fraction as a soft target)."""

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
