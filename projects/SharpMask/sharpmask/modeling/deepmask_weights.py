"""Starting a network from a trained DeepMask checkpoint: SharpMask takes its trunk and head,
InstanceFCN its ResNet trunk (on `shapes`, where there are no ImageNet weights, a DeepMask
trained first stands in for them)."""
import logging

import torch
from fvcore.common.checkpoint import Checkpointer
from torch import nn

logger = logging.getLogger(__name__)
DEEPMASK_RESNET_PREFIX = "trunk.resnet."  # DeepMask's ResNet (stem, res2-res4) in its state


def deepmask_resnet_state(path):
    """{ResNet key: tensor} of the DeepMask (or SharpMask) checkpoint at `path`."""
    checkpoint = Checkpointer(nn.Module())._load_file(path)  # our own .pth: {'model': ...}
    state = checkpoint.get("model", checkpoint)
    resnet = {k[len(DEEPMASK_RESNET_PREFIX):]: torch.as_tensor(v) for k, v in state.items()
              if k.startswith(DEEPMASK_RESNET_PREFIX)}
    if not resnet:
        raise ValueError(f"{path} holds no DeepMask trunk ({DEEPMASK_RESNET_PREFIX}* weights)")
    return resnet


def load_checked(module, state, key, path, what, advice):
    """Load `state` into `module` (every key of module.state_dict() is needed, extra keys are
    ignored); raise ValueError naming the config `key` when a key is missing or misshapen."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or wrong:
        raise ValueError(
            f"{key} = {path} does not match this {what} (missing: {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}; wrong shape: {wrong[:5]}); {advice}")
    module.load_state_dict({k: torch.as_tensor(state[k]) for k in expected})


def load_deepmask_weights(trunk, head, path):
    """Load a DeepMask checkpoint's trunk and head (SharpMask's starting point)."""
    holder = nn.Module()
    holder.trunk, holder.head = trunk, head
    checkpoint = Checkpointer(holder)._load_file(path)
    load_checked(holder, checkpoint.get("model", checkpoint), "MODEL.SHARPMASK.DEEPMASK_WEIGHTS",
                 path, "DeepMask", "train DeepMask with the same MODEL.RESNETS and "
                 "MODEL.DEEPMASK settings first")
    logger.info("Loaded the DeepMask trunk and head from %s", path)


def load_deepmask_trunk(resnet, path):
    """Load the ResNet stem and res2-res4 of a DeepMask checkpoint into InstanceFCN's trunk
    `resnet` (a detectron2 ResNet cut after res4; BN or FrozenBN; dilation does not change
    the weights' shapes)."""
    load_checked(resnet, deepmask_resnet_state(path), "MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS",
                 path, "InstanceFCN trunk", "train DeepMask with the same MODEL.RESNETS settings "
                 "first")
    logger.info("Loaded InstanceFCN's trunk from the DeepMask trunk in %s", path)
