"""Refuse weights that would leave a whole part of the model at its random initialisation.

detectron2 loads any checkpoint non-strictly: an InstanceFCN checkpoint given to DeepMask, or a
DeepMask one given to SharpMask, only logs missing keys, and the run goes on with random heads.
A trained checkpoint (.pth) must cover every top-level module of the model; ImageNet-style
.pkl files, which detectron2 loads with name-matching heuristics to initialise backbones, are
exempt, as are remote files (model-zoo URLs). MODEL.WEIGHTS_ALLOW_PARTIAL overrides.
"""
import os

import torch


def modules_left_at_random(model, checkpoint_state):
    """Names of the model's top-level modules none of whose weights (with the right shape) are
    in `checkpoint_state`."""
    model = getattr(model, "module", model)
    state = model.state_dict()
    left = []
    for name, _ in model.named_children():
        keys = [k for k in state if k.startswith(name + ".")]
        if keys and not any(k in checkpoint_state and
                            tuple(checkpoint_state[k].shape) == tuple(state[k].shape)
                            for k in keys):
            left.append(name)
    return left


def check_weights_cover_model(model, path, allow_partial=False, key="MODEL.WEIGHTS"):
    """Raise ValueError naming the modules a local checkpoint at `path` would leave at random."""
    if allow_partial or not path or "://" in path or not os.path.isfile(path) \
            or path.endswith(".pkl"):  # detectron2 reads .pkl with name-matching heuristics
        return
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    left = modules_left_at_random(model, checkpoint.get("model", checkpoint))
    if left:
        architecture = type(getattr(model, "module", model)).__name__
        raise ValueError(
            f"{key} = {path!r} has no weights for {', '.join(repr(m) for m in left)} of this "
            f"{architecture}: they would stay at their random initialisation. Is it another "
            "architecture's checkpoint (e.g. a DeepMask checkpoint for SharpMask belongs in "
            "MODEL.SHARPMASK.DEEPMASK_WEIGHTS)? Set MODEL.WEIGHTS_ALLOW_PARTIAL True if you mean "
            "to start those modules from scratch.")
