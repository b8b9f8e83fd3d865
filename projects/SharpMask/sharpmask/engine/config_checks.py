"""Fail at start, with a message naming the problem, on configs that would fail later."""
import os

import torch
from detectron2.data import DatasetCatalog


def merge_config(cfg, config_file, opts):
    """merge_from_file / merge_from_list with errors that name the file and the bad key."""
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file {config_file} does not exist")
        try:
            cfg.merge_from_file(config_file)
        except KeyError as e:
            raise KeyError(f"{config_file}: {e.args[0]} (keys come from detectron2's defaults "
                           "and sharpmask.add_sharpmask_config; check the spelling)") from None
    if len(opts) % 2:
        raise ValueError(f"command-line overrides must be KEY VALUE pairs, got {opts}")
    try:
        cfg.merge_from_list(opts)
    except (KeyError, AssertionError) as e:  # yacs asserts on unknown keys here
        raise KeyError(f"command line: {e.args[0] if e.args else e}") from None
    return cfg


def _looks_remote(path):
    return "://" in path


def check_config(cfg):
    """Datasets registered, proposal files given and present, weights present, device
    available."""
    registered = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in registered:
                raise KeyError(
                    f"DATASETS.{key} names {name!r}, which is not a registered dataset. "
                    f"Registered: {', '.join(sorted(registered))}"
                )
    if cfg.MODEL.LOAD_PROPOSALS:
        for key in ("TRAIN", "TEST"):
            names, files = cfg.DATASETS[key], cfg.DATASETS[f"PROPOSAL_FILES_{key}"]
            if names and len(files) != len(names):
                raise ValueError(
                    f"MODEL.LOAD_PROPOSALS is on: DATASETS.PROPOSAL_FILES_{key} needs one "
                    f"proposal file per dataset of DATASETS.{key} {tuple(names)}, got "
                    f"{tuple(files)}. Write them with tools/dump_proposals.py")
            missing = [f for f in files[:len(names)] if not os.path.isfile(f)]
            if missing:
                raise FileNotFoundError(f"DATASETS.PROPOSAL_FILES_{key}: no such file "
                                        f"{missing}; write it with tools/dump_proposals.py")
    weights = cfg.MODEL.WEIGHTS
    if weights and not _looks_remote(weights) and not os.path.isfile(weights):
        raise FileNotFoundError(f"MODEL.WEIGHTS = {weights!r}: no such file")
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"MODEL.DEVICE = {cfg.MODEL.DEVICE!r} but no CUDA device is "
                           "available; add `MODEL.DEVICE cpu` to the command line")
