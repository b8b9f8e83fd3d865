"""Checkpoints are written atomically: a save that dies half-way loses nothing."""
import pytest
import torch
from torch import nn

from sharpmask.engine import checkpoint as ckpt_module  # its torch.save is patched
from sharpmask.engine.checkpoint import AtomicCheckpointer


def test_a_save_killed_mid_write_leaves_the_last_checkpoint_intact(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    checkpointer = AtomicCheckpointer(model, str(tmp_path), save_to_disk=True)
    checkpointer.save("model_0000004", iteration=4)
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 partial bytes")
        raise KeyboardInterrupt  # what a kill looks like from inside the process

    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(ckpt_module.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000009", iteration=9)
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000004.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    fresh = nn.Linear(3, 2)
    extra = AtomicCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 4
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, weights[key])


def test_written_checkpoint_is_readable_with_plain_detectron2(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    model = nn.Linear(3, 2)
    AtomicCheckpointer(model, str(tmp_path), save_to_disk=True).save("model_final")
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    (tmp_path / "plain").write_bytes(b"")  # the permissions a plain open() gives (umask)
    assert (tmp_path / "model_final.pth").stat().st_mode == (tmp_path / "plain").stat().st_mode
    fresh = nn.Linear(3, 2)
    DetectionCheckpointer(fresh).load(str(tmp_path / "model_final.pth"))
    assert torch.equal(fresh.weight, model.weight)
