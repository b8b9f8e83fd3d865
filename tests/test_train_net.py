"""train_net.py end to end: distributed CPU training, resume, eval-only, config errors."""
import json
import os
import subprocess
import sys

import pytest
from detectron2.config import get_cfg

from sharpmask import add_sharpmask_config
from sharpmask.engine import ConfigError, check_config, merge_config

CONFIG = "configs/shapes/mask_rcnn_R18_FPN_shapes.yaml"
SMALL = ["DATASETS.TRAIN", "('shapes_val_mini',)", "DATASETS.TEST", "()",
         "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
         "INPUT.MIN_SIZE_TRAIN", "(256,)", "INPUT.MAX_SIZE_TRAIN", "384"]


def _train_net(repo_root, *args, timeout=600):
    proc = subprocess.run([sys.executable, "train_net.py", *args], cwd=repo_root,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def _iterations(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line)["iteration"] for line in f if '"total_loss"' in line]


def test_two_process_cpu_training(repo_root, tmp_path):
    log = _train_net(repo_root, "--config-file", CONFIG, "--num-gpus", "2", *SMALL,
                     "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(tmp_path))
    assert "World size: 2" in log
    assert "Training DistributedDataParallel(GeneralizedRCNN) in 2 processes (gloo)" in log
    assert _iterations(tmp_path)[-1] == 2
    assert (tmp_path / "model_final.pth").is_file()


def test_resume_continues_from_last_checkpoint(repo_root, tmp_path):
    common = [*SMALL, "OUTPUT_DIR", str(tmp_path), "SOLVER.CHECKPOINT_PERIOD", "2"]
    _train_net(repo_root, "--config-file", CONFIG, *common, "SOLVER.MAX_ITER", "2")
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    log = _train_net(repo_root, "--config-file", CONFIG, "--resume", *common,
                     "SOLVER.MAX_ITER", "4")
    assert "Starting training from iteration 2" in log
    assert _iterations(tmp_path)[-1] == 3


def test_eval_only_writes_proposal_evaluation(repo_root, tmp_path):
    """An RPN (box proposals, random weights) through train_net --eval-only and our evaluator:
    the AR it reports is pycocotools' (useCats=0) on the box_proposals.pkl it wrote."""
    import pickle

    from detectron2.data import MetadataCatalog

    from coco_helpers import SIX, reference_coco_recall
    _train_net(repo_root, "--config-file", "configs/shapes/rpn_R18_FPN_shapes.yaml",
               "--eval-only", "DATASETS.TEST", "('shapes_val_mini',)",
               "INPUT.MIN_SIZE_TEST", "256", "OUTPUT_DIR", str(tmp_path))
    out = tmp_path / "inference" / "shapes_val_mini"
    with open(out / "proposal_metrics.json") as f:
        metrics = json.load(f)
    with open(out / "box_proposals.pkl", "rb") as f:
        written = pickle.load(f)
    results = [{"image_id": i, "category_id": 1, "score": float(s),
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]}
               for i, boxes, scores in zip(written["ids"], written["boxes"],
                                           written["objectness_logits"])
               for (x0, y0, x1, y1), s in zip(boxes, scores)]
    reference = reference_coco_recall(MetadataCatalog.get("shapes_val_mini").json_file, results,
                                      written["ids"], "bbox")
    assert set(metrics) == {"bbox"} and metrics["bbox"]["AR@1000"] > 0
    for name, value in zip(SIX, reference.stats[6:12]):
        assert metrics["bbox"][name] == pytest.approx(100 * value, abs=0.01), name
    for name in ("ar_vs_num_proposals.png", "recall_vs_iou.png"):
        assert (out / name).stat().st_size > 0


def _cfg():
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    return cfg


def test_unknown_config_key_is_named(repo_root, tmp_path):
    """Bad input: a misspelled config key, in a file or on the command line | KeyError naming the
    file and the key"""
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{repo_root / CONFIG}"\nMODEL:\n  RESNETS:\n    DEPHT: 50\n')
    with pytest.raises(KeyError, match=r"bad\.yaml.*MODEL\.RESNETS\.DEPHT"):
        merge_config(_cfg(), str(bad), [])
    with pytest.raises(KeyError, match="command line.*SOLVER.BASE_LRR"):
        merge_config(_cfg(), str(repo_root / CONFIG), ["SOLVER.BASE_LRR", "0.1"])


def test_missing_dataset_and_weights_are_named(repo_root):
    """Bad input: an unregistered dataset, missing MODEL.WEIGHTS or DeepMask trunk weights |
    refused at start, naming the key (and the registered datasets)"""
    cfg = merge_config(_cfg(), str(repo_root / CONFIG), ["DATASETS.TRAIN", "('shapes_tran',)"])
    with pytest.raises(ConfigError, match="DATASETS.TRAIN names 'shapes_tran'.*shapes_train"):
        check_config(cfg)
    cfg = merge_config(_cfg(), str(repo_root / CONFIG), ["MODEL.WEIGHTS", "/nonexistent.pth"])
    with pytest.raises(ConfigError, match="MODEL.WEIGHTS = '/nonexistent.pth'"):
        check_config(cfg)
    cfg = merge_config(_cfg(), str(repo_root / "configs/shapes/instancefcn_R18_shapes.yaml"),
                       ["MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS", "/nonexistent.pth"])
    with pytest.raises(ConfigError, match="DEEPMASK_TRUNK_WEIGHTS = '/nonexistent.pth': no such "
                                          "file. This InstanceFCN starts its trunk from a trained"):
        check_config(cfg)


def test_every_problem_of_the_main_command_is_named_at_start(repo_root, monkeypatch, tmp_path):
    """The README's main command on a machine without COCO, a GPU or a trained DeepMask: one
    error at start names all three (and the environment variable that locates COCO), and the
    run writes nothing.
    Bad input: the main command without COCO, a GPU or a trained DeepMask | one error at start
    names all three; nothing is written"""
    # No COCO and no GPU (an empty CUDA_VISIBLE_DEVICES hides a machine's GPUs from torch).
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    # Run from an empty folder: the config's DeepMask path is relative to the working directory,
    # and a user's repository may hold a trained output/deepmask_R50.
    proc = subprocess.run([sys.executable, str(repo_root / "train_net.py"), "--config-file",
                           str(repo_root / "configs/sharpmask_R50.yaml"),
                           "OUTPUT_DIR", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    for expected in ("MODEL.SHARPMASK.DEEPMASK_WEIGHTS = 'output/deepmask_R50/model_best.pth'",
                     "instances_train2014.json does not exist", "$DETECTRON2_DATASETS",
                     "MODEL.DEVICE = 'cuda'"):
        assert expected in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("config,key", [
    ("configs/shapes/deepmask_R18_shapes.yaml", "MODEL.DEEPMASK.TEST_SCALES"),
    ("configs/shapes/instancefcn_R18_shapes.yaml", "MODEL.INSTANCEFCN.TEST_SCALES")])
def test_empty_scale_lists_are_refused_at_start(repo_root, config, key):
    """Bad input: an empty scale list | refused at start, with the default"""
    cfg = merge_config(_cfg(), str(repo_root / config), [key, "[]"])
    with pytest.raises(ConfigError, match=rf"{key} is empty: .* needs at least one value"):
        check_config(cfg)


def test_settings_without_effect_are_refused_at_start(repo_root):
    """Bad input: a setting without effect (CLS_LOSS_WEIGHT outside RefineMask), an unknown
    CLIP_TYPE | refused at start"""
    opts = ["MODEL.ROI_BOX_HEAD.CLS_LOSS_WEIGHT", "2.0", "SOLVER.CLIP_GRADIENTS.ENABLED",
            "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "global"]
    cfg = merge_config(_cfg(), str(repo_root / CONFIG), opts)
    with pytest.raises(ConfigError, match=r"(?s)CLS_LOSS_WEIGHT = 2.0 has no effect with .*"
                                          r"'StandardROIHeads'.*CLIP_TYPE = 'global'"):
        check_config(cfg)


def test_missing_coco_files_are_named(monkeypatch, tmp_path):
    """Bad input: COCO's annotation file missing | named, with $DETECTRON2_DATASETS"""
    from detectron2.data import DatasetCatalog

    from sharpmask.data.datasets import register_coco_val5k
    register_coco_val5k(str(tmp_path))
    try:
        with pytest.raises(FileNotFoundError,
                           match=r"instances_val2014\.json.*DETECTRON2_DATASETS"):
            DatasetCatalog.get("coco_2014_val_first5k")
    finally:
        from sharpmask.data.datasets import coco_root
        register_coco_val5k(coco_root())


def _write_environment(folder):
    import torch
    from detectron2.utils import comm

    with open(os.path.join(folder, f"rank{comm.get_rank()}"), "w") as f:
        json.dump([torch.get_num_threads(), torch.cuda.is_available(),
                   torch.distributed.get_backend()], f)


def test_launched_cpu_processes_share_the_cores_and_use_gloo(tmp_path, monkeypatch):
    """Processes started by `launch` under launch_environment for a CPU device each take
    cores / processes torch threads (not every core each, which oversubscribes the CPU) and
    see no GPU, so that `launch` picks gloo even on a GPU machine (NCCL rejects CPU tensors;
    a 1-GPU machine cannot start 2 GPU processes). An OMP_NUM_THREADS given by the user
    wins, a GPU device keeps the GPUs, and the parent's environment is left as it was."""
    from detectron2.engine import launch

    from sharpmask.engine.ddp import launch_environment

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with launch_environment(2, "cpu"):
        launch(_write_environment, 2, dist_url="auto", args=(str(tmp_path),))
    assert "OMP_NUM_THREADS" not in os.environ and "CUDA_VISIBLE_DEVICES" not in os.environ
    expected = [max(1, os.cpu_count() // 2), False, "gloo"]
    assert [json.loads((tmp_path / f"rank{r}").read_text()) for r in (0, 1)] == [expected] * 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with launch_environment(2, "cpu"):
        assert os.environ["OMP_NUM_THREADS"] == "3"
    with launch_environment(2, "cuda"):
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
