"""A DetectionCheckpointer whose files are never half-written.

fvcore writes `model_N.pth` and then `last_checkpoint` in place: a job killed (pre-empted,
out of memory) while writing either leaves a truncated file under the final name, and
`--resume` then fails on it or, with an empty `last_checkpoint`, silently starts from
MODEL.WEIGHTS again. Here both are written to a temporary file in the same folder and renamed
into place (atomic on POSIX), so a resume always finds the last complete checkpoint.
"""
import os
import tempfile

import torch
from detectron2.checkpoint import DetectionCheckpointer


def _atomic_write(path, write, mode):
    """Call write(file) on a temporary file next to `path`, then rename it to `path`."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; match a plain open()
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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
        _atomic_write(save_file, lambda f: torch.save(data, f), "wb")
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        if not os.path.isdir(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        _atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                      lambda f: f.write(last_filename_basename), "w")
