"""InstanceFCN's trunk: detectron2's ResNet cut after res4, with res4 dilated so that its
features have stride 8 (the paper's "hole algorithm" on VGG conv5).

detectron2's DeepLab project builds dilated ResNets too, but only with bottleneck blocks
(depth >= 50) and it ties res4's dilation to res5's. We need R-18 for CPU runs, so we build the
standard ResNet (any depth, the same parameter names, so the same ImageNet checkpoints) and
dilate res4 in place; for R-50 the result equals DeepLab's builder with RES4_DILATION 2 (tested).
"""
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from torch import nn

from .trunk import use_channels_last

STRIDE = 8


def dilate_stage(stage, dilation):
    """Remove the stride of a ResNet stage and dilate its 3x3 convolutions instead, in place:
    the stage keeps its input resolution and its receptive field."""
    for module in stage.modules():
        if not isinstance(module, nn.Conv2d):
            continue
        module.stride = (1, 1)
        if module.kernel_size == (3, 3):
            module.dilation = (dilation, dilation)
            module.padding = (dilation, dilation)


def build_dilated_trunk(cfg):
    """ResNet from cfg.MODEL.RESNETS (depth, norm, freezing) up to res4, res4 dilated by 2.

    forward(x: (B, 3, H, W), H and W multiples of 8) -> {"res4": (B, C4, H/8, W/8)}.
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4"]
    cfg.MODEL.RESNETS.RES5_DILATION = 1  # res5 is not built
    resnet = build_resnet_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
    dilate_stage(resnet.res4, 2)
    resnet._out_feature_strides["res4"] = STRIDE
    return use_channels_last(resnet) if cfg.MODEL.get("CHANNELS_LAST", False) else resnet
