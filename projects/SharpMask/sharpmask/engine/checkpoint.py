"""A DetectionCheckpointer whose files are never half-written.

fvcore writes `model_N.pth` and then `last_checkpoint` in place: a job killed (pre-empted,
out of memory) while writing either leaves a truncated file under the final name, and
`--resume` then fails on it or, with an empty `last_checkpoint`, silently starts from
MODEL.WEIGHTS again. Here both go through `atomic_open` (a temporary file renamed into place),
so a resume always finds the last complete checkpoint.
"""
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..modeling.deepmask_weights import deepmask_resnet_state
from ..utils.atomic_io import atomic_open


def last_checkpoint_problem(save_dir):
    """Why `save_dir`/last_checkpoint cannot be resumed from, or None (absent, or naming a
    checkpoint file there). fvcore would die on undecodable bytes without naming the file, or
    look for a file named by the garbage."""
    path = os.path.join(save_dir, "last_checkpoint")
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        raw = f.read()
    try:
        name = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        name = ""
    if name and "\x00" not in name and os.path.isfile(os.path.join(save_dir, name)):
        return None
    saved = sorted(f for f in os.listdir(save_dir) if f.endswith(".pth"))
    what = f"names {name!r}, which is not a file there" if name and "\x00" not in name \
        else f"does not hold a file name (it starts {raw[:32]!r})"
    return (f"--resume: {path} {what}. Write the name of the checkpoint to resume from into "
            f"it (here: {saved or 'no .pth file'}), or delete it to start from MODEL.WEIGHTS")


class AtomicCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic writes of the checkpoint and of `last_checkpoint`
    (local folders; other PathManager backends keep fvcore's behaviour)."""

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk or not os.path.isdir(self.save_dir):
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        with atomic_open(save_file, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def get_checkpoint_file(self):
        problem = last_checkpoint_problem(self.save_dir) if os.path.isdir(self.save_dir) \
            else None
        if problem:
            raise ValueError(problem)
        return super().get_checkpoint_file()

    def tag_last_checkpoint(self, last_filename_basename):
        if not os.path.isdir(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        with atomic_open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)


def save_deepmask_trunk_as_fpn_bottom_up(deepmask_weights, path):
    """Write the ResNet trunk of a DeepMask checkpoint (stem, res2-res4) as the bottom-up
    ResNet of a detectron2 FPN backbone (`backbone.bottom_up.*`), to start a detector on
    `shapes` from it where a COCO detector starts from ImageNet weights."""
    resnet = deepmask_resnet_state(deepmask_weights)
    trunk = {"backbone.bottom_up." + k: v for k, v in resnet.items()
             if not k.endswith("num_batches_tracked")}  # FrozenBN has no counter
    with atomic_open(path, "wb") as f:
        torch.save({"model": trunk}, f)
