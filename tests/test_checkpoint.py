"""Checkpoints are written atomically: a save that dies half-way loses nothing."""
import pytest
import torch
from torch import nn

from sharpmask.engine import checkpoint as ckpt_module  # its torch.save is patched
from sharpmask.engine.checkpoint import AtomicCheckpointer


def test_a_save_killed_mid_write_leaves_the_last_checkpoint_intact(tmp_path, monkeypatch):
    """Bad input: a checkpoint save killed half-way | the previous checkpoint stays intact and
    last_checkpoint names it"""
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


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00garbage", r"does not hold a file name \(it starts b'\\xff\\xfe"),
    (b"\x00\x00\x00\x00", r"does not hold a file name \(it starts b'\\x00"),
    (b"model_0000099.pth\n", r"names 'model_0000099.pth', which is not a file there"),
])
def test_unusable_last_checkpoint_is_named_at_start(repo_root, tmp_path, content, message):
    """--resume with garbage in OUTPUT_DIR/last_checkpoint: check_config names the file, what
    is wrong and the checkpoints there, before anything is written; the checkpointer says the
    same where a script calls it directly (fvcore died with UnicodeDecodeError, or looked for
    a file named by the garbage).
    Bad input: garbage bytes in OUTPUT_DIR/last_checkpoint, or the name of a missing file, with
    --resume | named at start, with the checkpoints that are there"""
    from model_helpers import load_cfg
    from sharpmask.engine import ConfigError, check_config

    model = nn.Linear(3, 2)
    AtomicCheckpointer(model, str(tmp_path), save_to_disk=True).save("model_0000004")
    (tmp_path / "last_checkpoint").write_bytes(content)
    cfg = load_cfg(repo_root, "configs/shapes/deepmask_R18_shapes.yaml",
                   "OUTPUT_DIR", str(tmp_path))
    check_config(cfg)  # without --resume the file is not read
    with pytest.raises(ConfigError, match=r"last_checkpoint " + message +
                       r".*\['model_0000004.pth'\]"):
        check_config(cfg, resume=True)
    with pytest.raises(ValueError, match=message):
        AtomicCheckpointer(nn.Linear(3, 2), str(tmp_path)).resume_or_load("", resume=True)
