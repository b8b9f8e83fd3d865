"""DeepMask then SharpMask through train_net.py: train, resume after a kill, evaluate."""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

from test_train_net import _iterations, _train_net

DM = "configs/shapes/deepmask_R18_shapes.yaml"
SM = "configs/shapes/sharpmask_R18_shapes.yaml"
TINY = ["DATASETS.TRAIN", "('shapes_val_mini',)", "DATASETS.TEST", "('shapes_val_mini',)",
        "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.STEPS", "(100,)", "MODEL.DEEPMASK.TEST_TOPK", "200",
        "MODEL.DEEPMASK.TEST_SCALES", "[0.5, 1.0]",  # multi-scale, at a test's cost
        "TEST.PATCH_EVAL.NUM_PATCHES", "16"]


def test_deepmask_then_sharpmask_train_and_evaluate(repo_root, tmp_path):
    dm_out, sm_out = tmp_path / "deepmask", tmp_path / "sharpmask"
    _train_net(repo_root, "--config-file", DM, *TINY, "SOLVER.MAX_ITER", "2",
               "TEST.PATCH_EVAL.PERIOD", "1", "OUTPUT_DIR", str(dm_out))
    with open(dm_out / "metrics.json") as f:  # the patch evaluation, logged every iteration
        rows = [json.loads(line) for line in f if "patch/recall@0.7" in line]
    assert len(rows) == 2 and rows[0]["iteration"] == 0  # after iteration 0, and at the end
    assert 0 <= rows[-1]["patch/mean_iou"] <= 100 and (dm_out / "model_best.pth").is_file()
    log = _train_net(repo_root, "--config-file", SM, *TINY, "SOLVER.MAX_ITER", "2",
                     "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", str(dm_out / "model_final.pth"),
                     "OUTPUT_DIR", str(sm_out))
    assert "Loaded the DeepMask trunk and head" in log
    for out in (dm_out, sm_out):
        results = out / "inference" / "shapes_val_mini"
        with open(results / "proposal_metrics.json") as f:
            metrics = json.load(f)
        assert set(metrics) == {"segm", "bbox"}
        for name in ("segment_proposals.json", "box_proposals.pkl", "ar_vs_num_proposals.png",
                     "recall_vs_iou.png"):
            assert (results / name).stat().st_size > 0
    eval_out = tmp_path / "eval"
    _train_net(repo_root, "--config-file", SM, "--eval-only", *TINY,
               "MODEL.WEIGHTS", str(sm_out / "model_final.pth"), "OUTPUT_DIR", str(eval_out))
    assert (eval_out / "inference" / "shapes_val_mini" / "proposal_metrics.json").is_file()


def _last_checkpoint_iter(out_dir):
    """Iteration named by OUTPUT_DIR/last_checkpoint (-1 while absent or half-written)."""
    name = (out_dir / "last_checkpoint").read_text() if (out_dir / "last_checkpoint").exists() else ""
    match = re.fullmatch(r"model_(\d{7})\.pth", name.strip())
    return int(match.group(1)) if match else -1


def test_resume_after_kill_mid_training(repo_root, tmp_path):
    """Kill DeepMask training once a checkpoint exists; --resume continues from it.
    Bad input: training killed (SIGKILL) | --resume continues from the last checkpoint"""
    args = [sys.executable, "train_net.py", "--config-file", DM, *TINY,
            "SOLVER.MAX_ITER", "1000", "SOLVER.CHECKPOINT_PERIOD", "3",
            "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path)]
    proc = subprocess.Popen(args, cwd=repo_root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # last_checkpoint is written after the .pth: wait for it, not for the .pth file. No
        # clock deadline (machines differ in speed): the wait ends when the checkpoint comes or
        # the process ends, which its 1000 iterations bound.
        while _last_checkpoint_iter(tmp_path) < 5:
            assert proc.poll() is None, "training ended without writing checkpoint 5"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    last = (tmp_path / "last_checkpoint").read_text()  # training may have gone on a little
    done = int(last[len("model_"):-len(".pth")]) + 1
    assert done >= 6 and (tmp_path / last).is_file()
    log = _train_net(repo_root, "--config-file", DM, "--resume", *TINY,
                     "SOLVER.MAX_ITER", str(done + 2), "DATASETS.TEST", "()",
                     "OUTPUT_DIR", str(tmp_path))
    assert f"Starting training from iteration {done}" in log
    assert _iterations(tmp_path)[-1] == done + 1
