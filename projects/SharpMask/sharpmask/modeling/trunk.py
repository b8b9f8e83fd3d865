"""The convolutional trunk shared by DeepMask and SharpMask: detectron2's ResNet truncated after
res4 (stride 16), which also exposes the stem's conv1 output before max-pooling (stride 2), the
finest skip feature of SharpMask."""
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.backbone.resnet import build_resnet_backbone

TRUNK_FEATURES = ("conv1", "res2", "res3", "res4")


class ProposalTrunk(Backbone):
    """ResNet (any depth) up to res4.

    forward(x: (B, 3, H, W), H and W multiples of 16) -> {"conv1": (B, C1, H/2, W/2),
    "res2": (B, C2, H/4, W/4), "res3": (B, C3, H/8, W/8), "res4": (B, C4, H/16, W/16)}.
    """

    def __init__(self, resnet):
        super().__init__()
        if resnet.stage_names[-1] != "res4":
            raise ValueError("the proposal trunk is a ResNet truncated after res4; set "
                             "MODEL.RESNETS.OUT_FEATURES to ['res2', 'res3', 'res4']")
        self.resnet = resnet
        shapes = resnet.output_shape()
        self._out_feature_channels = {
            "conv1": resnet.stem.conv1.out_channels,
            **{k: shapes[k].channels for k in ("res2", "res3", "res4")},
        }
        self._out_feature_strides = {"conv1": 2, **{k: shapes[k].stride
                                                    for k in ("res2", "res3", "res4")}}
        self._out_features = list(TRUNK_FEATURES)

    @property
    def size_divisibility(self):
        return 16

    def forward(self, x):
        stem = self.resnet.stem
        x = F.relu_(stem.conv1(x))
        outputs = {"conv1": x}
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        for name, stage in zip(self.resnet.stage_names, self.resnet.stages):
            x = stage(x)
            outputs[name] = x
        return outputs


def _to_channels_last(module, args):
    return (args[0].contiguous(memory_format=torch.channels_last),) + tuple(args[1:])


def use_channels_last(trunk):
    """MODEL.CHANNELS_LAST: `trunk`'s convolution weights and its input image in channels-last
    memory format, which oneDNN's CPU convolutions (and GPU tensor cores) run faster; the
    results differ only by float summation order. The outputs stay channels-last."""
    trunk.to(memory_format=torch.channels_last)
    trunk.register_forward_pre_hook(_to_channels_last)
    return trunk


def build_proposal_trunk(cfg):
    """detectron2's ResNet from cfg.MODEL.RESNETS (depth, norm, freezing), cut after res4."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4"]
    trunk = ProposalTrunk(build_resnet_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))))
    return use_channels_last(trunk) if cfg.MODEL.get("CHANNELS_LAST", False) else trunk
