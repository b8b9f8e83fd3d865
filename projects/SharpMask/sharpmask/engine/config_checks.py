"""Fail at start, with a message naming the problem, on configs that would fail later."""
import os

import torch
import yaml
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import add_sharpmask_config
from ..data.datasets import generated_dataset_names
from ..data.validation import (dataset_problems, loaded_dataset, proposal_file_problems,
                               validate_catalog)
from ..modeling.selective_search import MODES as SELECTIVE_SEARCH_MODES
from .checkpoint import last_checkpoint_problem


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
        except (AssertionError, ValueError, TypeError, yaml.YAMLError) as e:
            # fvcore's "Cannot inherit key ..." (a mapping where the base has a value) names
            # neither file nor parent; yacs' type mismatches name the key
            raise ValueError(f"{config_file}: {e} (compare the key with its default in "
                             "detectron2's config or sharpmask/config.py)") from None
    if len(opts) % 2:
        raise ValueError(f"command-line overrides must be KEY VALUE pairs, got {opts}")
    try:
        cfg.merge_from_list(opts)
    except (KeyError, AssertionError) as e:  # yacs asserts on unknown keys here
        raise KeyError(f"command line: {e.args[0] if e.args else e}") from None
    return cfg


def _looks_remote(path):
    return "://" in path


class ConfigError(ValueError):
    """Everything a run would trip over later, found at start: one line per problem."""

    def __init__(self, problems):
        super().__init__("the config cannot run:\n- " + "\n- ".join(problems))
        self.problems = problems


def _dataset_problems(cfg):
    registered = set(DatasetCatalog.list())
    problems = []
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in registered:
                problems.append(f"DATASETS.{key} names {name!r}, which is not a registered "
                                f"dataset. Registered: {', '.join(sorted(registered))}")
                continue
            if name in generated_dataset_names():  # generated on first use: no files yet
                continue
            meta = MetadataCatalog.get(name)
            for field, what in (("json_file", "annotation file"), ("image_root", "image folder")):
                path = meta.get(field, None)
                if path and not os.path.exists(path):
                    problems.append(
                        f"DATASETS.{key} names {name!r}, whose {what} {path} does not exist. "
                        "COCO files are looked for under $DETECTRON2_DATASETS (now "
                        f"{os.environ.get('DETECTRON2_DATASETS', 'unset: ./datasets')}) in "
                        "detectron2's layout (coco/annotations/, coco/train2014/, ...)")
    seen = set(cfg.TEST.SEGMENT_PROPOSALS.SEEN_CATEGORIES)
    for name in cfg.DATASETS.TEST if seen else ():
        classes = MetadataCatalog.get(name).get("thing_classes", None) if name in registered \
            else None
        if classes is not None and seen - set(classes):
            problems.append(f"TEST.SEGMENT_PROPOSALS.SEEN_CATEGORIES names "
                            f"{sorted(seen - set(classes))}, which are not categories of "
                            f"{name!r}: {classes}")
    return problems


def _unreadable_checkpoint(key, path):
    """Why the local checkpoint `path` cannot be loaded (truncated, not a checkpoint), or None.
    Memory-mapped: the tensors are not read. detectron2's .pkl files are left to detectron2."""
    if not path or _looks_remote(path) or not os.path.isfile(path) or path.endswith(".pkl"):
        return None
    for mmap in (True, False):  # files saved in torch's legacy format cannot be mapped
        try:
            torch.load(path, map_location="cpu", mmap=mmap, weights_only=False)
            return None
        except Exception as e:
            error = e
            if "mmap can only be used" not in str(e):
                break
    return (f"{key} = {path!r} cannot be loaded as a PyTorch checkpoint (truncated by a full "
            f"disk or an interrupted copy, or not a checkpoint?): {type(error).__name__}: "
            f"{error}")


def _file_problems(cfg):
    problems = []
    if cfg.MODEL.LOAD_PROPOSALS:
        for key in ("TRAIN", "TEST"):
            names, files = cfg.DATASETS[key], cfg.DATASETS[f"PROPOSAL_FILES_{key}"]
            if names and len(files) != len(names):
                problems.append(
                    f"MODEL.LOAD_PROPOSALS is on: DATASETS.PROPOSAL_FILES_{key} needs one "
                    f"proposal file per dataset of DATASETS.{key} {tuple(names)}, got "
                    f"{tuple(files)}. Write them with tools/dump_proposals.py")
                continue
            missing = [f for f in files[:len(names)] if not os.path.isfile(f)]
            if missing:
                problems.append(f"DATASETS.PROPOSAL_FILES_{key}: no such file {missing}; write "
                                "it with tools/dump_proposals.py")
                continue
            for name, path in zip(names, files):
                if name not in DatasetCatalog.list():
                    continue
                try:
                    dicts = loaded_dataset(name)
                except Exception:  # the loading check names it
                    continue
                problems += [f"DATASETS.PROPOSAL_FILES_{key}: {p}"
                             for p in proposal_file_problems(path, name, dicts)]
    weights = cfg.MODEL.WEIGHTS
    if weights and not _looks_remote(weights) and not os.path.isfile(weights):
        problems.append(f"MODEL.WEIGHTS = {weights!r}: no such file")
    generator = cfg.MODEL.SEGMENT_PROPOSAL_GENERATOR
    uses_generator = cfg.MODEL.PROPOSAL_GENERATOR.NAME in SEGMENT_PROPOSAL_GENERATORS
    for field, what in (("CONFIG_FILE", "config"), ("WEIGHTS", "trained checkpoint")):
        path = generator[field]
        if path and not _looks_remote(path) and not os.path.isfile(path):
            problems.append(f"MODEL.SEGMENT_PROPOSAL_GENERATOR.{field} = {path!r}: no such file")
        elif uses_generator and not path:
            problems.append(f"MODEL.PROPOSAL_GENERATOR.NAME {cfg.MODEL.PROPOSAL_GENERATOR.NAME} "
                            f"needs MODEL.SEGMENT_PROPOSAL_GENERATOR.{field}: the proposal "
                            f"network's {what}")
    if uses_generator and cfg.MODEL.META_ARCHITECTURE != "SegmentProposalRCNN":
        problems.append(f"MODEL.PROPOSAL_GENERATOR.NAME {cfg.MODEL.PROPOSAL_GENERATOR.NAME} "
                        f"needs MODEL.META_ARCHITECTURE SegmentProposalRCNN (got "
                        f"{cfg.MODEL.META_ARCHITECTURE}): its GeneralizedRCNN passes each "
                        "image's original size, so that the proposal network runs at the scale "
                        "of its offline proposals, not on the detector's resized image")
    for key, path in (("MODEL.WEIGHTS", weights),
                      ("MODEL.SHARPMASK.DEEPMASK_WEIGHTS", cfg.MODEL.SHARPMASK.DEEPMASK_WEIGHTS),
                      ("MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS",
                       cfg.MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS),
                      ("MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS", generator.WEIGHTS)):
        problem = _unreadable_checkpoint(key, path)
        if problem:
            problems.append(problem)
    arch = cfg.MODEL.META_ARCHITECTURE
    key, deepmask, starts = {
        "SharpMask": ("MODEL.SHARPMASK.DEEPMASK_WEIGHTS", cfg.MODEL.SHARPMASK.DEEPMASK_WEIGHTS,
                      "SharpMask starts"),
        "InstanceFCN": ("MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS",
                        cfg.MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS,
                        "This InstanceFCN starts its trunk"),
    }.get(arch, (None, "", None))
    if deepmask and not weights and not os.path.isfile(deepmask):
        problems.append(
            f"{key} = {deepmask!r}: no such file. {starts} from a trained DeepMask: train one "
            "first (its config's OUTPUT_DIR holds model_final.pth and model_best.pth) and point "
            f"this key at it, or set MODEL.WEIGHTS to a checkpoint of the whole {arch}")
    return problems


SEGMENT_PROPOSAL_GENERATORS = ("DeepMaskProposalGenerator", "SharpMaskProposalGenerator",
                               "InstanceFCNProposalGenerator")
# Lists a model cannot run with when empty, by meta-architecture.
NON_EMPTY = {
    "DeepMask": ["MODEL.DEEPMASK.TEST_SCALES"],
    "SharpMask": ["MODEL.DEEPMASK.TEST_SCALES"],
    "InstanceFCN": ["MODEL.INSTANCEFCN.TEST_SCALES", "INPUT.INSTANCEFCN.TRAIN_SCALES"],
}


# Numbers outside these intervals make a run fail late, hang, or silently do something else
# (a NaN learning rate trains nothing; a threshold above 1 keeps no mask). Lists: every value.
RANGES = {
    "(0, inf)": ["SOLVER.BASE_LR", "SOLVER.MAX_ITER", "SOLVER.IMS_PER_BATCH", "SOLVER.GAMMA",
                 "SOLVER.CHECKPOINT_PERIOD", "INPUT.MIN_SIZE_TRAIN", "INPUT.MAX_SIZE_TRAIN",
                 "INPUT.MAX_SIZE_TEST", "MODEL.DEEPMASK.WINDOW", "MODEL.DEEPMASK.MASK_SIZE",
                 "MODEL.DEEPMASK.TARGET_SIZE", "MODEL.DEEPMASK.TEST_TOPK",
                 "MODEL.DEEPMASK.TEST_MAX_SIZE", "MODEL.DEEPMASK.DECODE_BATCH_SIZE",
                 "MODEL.INSTANCEFCN.K", "MODEL.INSTANCEFCN.WINDOW_CELLS",
                 "MODEL.INSTANCEFCN.TEST_TOPK", "MODEL.INSTANCEFCN.TEST_MAX_SIZE",
                 "MODEL.INSTANCEFCN.DECODE_BATCH_SIZE", "INPUT.DEEPMASK.OBJECT_SIZE",
                 "INPUT.INSTANCEFCN.OBJECT_SIZE", "INPUT.INSTANCEFCN.WINDOWS_PER_IMAGE",
                 "TEST.SEGMENT_PROPOSALS.MAX_PROPOSALS", "TEST.SEGMENT_PROPOSALS.PASTE_CHUNK_SIZE",
                 "TEST.PATCH_EVAL.NUM_PATCHES", "TEST.DETECTIONS_PER_IMAGE",
                 "MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TRAIN",
                 "MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TEST", "MODEL.SELECTIVE_SEARCH.BASE_K",
                 "MODEL.SELECTIVE_SEARCH.INC_K", "MODEL.SELECTIVE_SEARCH.SIGMA",
                 "MODEL.SELECTIVE_SEARCH.MAX_PROPOSALS", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
                 "MODEL.RPN.POST_NMS_TOPK_TRAIN", "MODEL.RPN.POST_NMS_TOPK_TEST",
                 "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN",
                 "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST"],
    "[0, inf)": ["SOLVER.WEIGHT_DECAY", "SOLVER.WARMUP_ITERS", "SOLVER.STEPS",
                 "TEST.EVAL_PERIOD", "DATALOADER.NUM_WORKERS", "INPUT.MIN_SIZE_TEST",
                 "MODEL.DEEPMASK.CONTEXT", "MODEL.DEEPMASK.TEST_PAD",
                 "MODEL.DEEPMASK.MASK_LOSS_WEIGHT", "MODEL.DEEPMASK.SCORE_LOSS_WEIGHT",
                 "MODEL.INSTANCEFCN.TEST_PRE_NMS_TOPK", "MODEL.INSTANCEFCN.MASK_LOSS_WEIGHT",
                 "MODEL.INSTANCEFCN.OBJECTNESS_LOSS_WEIGHT", "INPUT.DEEPMASK.SCALE_JITTER",
                 "INPUT.DEEPMASK.SHIFT_JITTER", "TEST.PATCH_EVAL.PERIOD",
                 "MODEL.SEGMENT_PROPOSAL_GENERATOR.MIN_BOX_SIZE"],
    "[0, 1)": ["SOLVER.MOMENTUM", "MODEL.DEEPMASK.DROPOUT"],
    "(0, 1)": ["MODEL.DEEPMASK.MASK_THRESHOLD", "MODEL.INSTANCEFCN.MASK_THRESHOLD"],
    "(0, 1]": ["MODEL.DEEPMASK.NMS_THRESH", "MODEL.INSTANCEFCN.NMS_THRESH",
               "MODEL.RPN.NMS_THRESH", "MODEL.ROI_HEADS.NMS_THRESH_TEST",
               "MODEL.SEGMENT_PROPOSAL_GENERATOR.NMS_THRESH",
               "MODEL.ROI_HEADS.POSITIVE_FRACTION", "INPUT.INSTANCEFCN.POSITIVE_FRACTION",
               "SOLVER.WARMUP_FACTOR"],
    "[0, 1]": ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "INPUT.DEEPMASK.MASK_BATCH_PROB",
               "INPUT.DEEPMASK.FLIP"],
}


def _inside(value, interval):
    low, high = (float(v) for v in interval[1:-1].split(","))
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    return above and below  # False for NaN


def _range_problems(cfg):
    problems = []
    for interval, keys in RANGES.items():
        for key in keys:
            node = cfg
            for part in key.split("."):
                node = node[part]
            values = node if isinstance(node, (list, tuple)) else [node]
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))
                   or not _inside(v, interval)]
            if bad:
                problems.append(f"{key} = {node!r}: must be a number in {interval}"
                                + (" (every value)" if node is not values else ""))
    return problems


def _value_problems(cfg):
    problems = _range_problems(cfg)
    for key in NON_EMPTY.get(cfg.MODEL.META_ARCHITECTURE, []):
        node = cfg
        for part in key.split("."):
            node = node[part]
        if len(node) == 0:
            problems.append(f"{key} is empty: {cfg.MODEL.META_ARCHITECTURE} needs at least one "
                            f"value (the default is {_default(key)})")
        elif any(v <= 0 for v in node):
            problems.append(f"{key} = {list(node)}: every value must be positive")
    mode = cfg.MODEL.SELECTIVE_SEARCH.MODE
    if cfg.MODEL.META_ARCHITECTURE == "SelectiveSearch" and mode not in SELECTIVE_SEARCH_MODES:
        problems.append(f"MODEL.SELECTIVE_SEARCH.MODE = {mode!r}: must be one of "
                        f"{SELECTIVE_SEARCH_MODES}")
    if cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS_WEIGHT != 1.0 and \
            cfg.MODEL.ROI_HEADS.NAME != "RefineMaskROIHeads":
        problems.append(f"MODEL.ROI_BOX_HEAD.CLS_LOSS_WEIGHT = "
                        f"{cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS_WEIGHT} has no effect with "
                        f"MODEL.ROI_HEADS.NAME {cfg.MODEL.ROI_HEADS.NAME!r}: only "
                        "RefineMaskROIHeads reads it; leave it at 1.0")
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE not in ("value", "norm", "full_model"):
        problems.append(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE = {clip.CLIP_TYPE!r}: use 'value', "
                        "'norm' (each parameter's gradient) or 'full_model' (the norm of all "
                        "gradients together)")
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"MODEL.DEVICE = {cfg.MODEL.DEVICE!r} but no CUDA device is available; "
                        "add `MODEL.DEVICE cpu` to the command line")
    return problems


def _default(key):
    node = add_sharpmask_config(get_cfg())
    for part in key.split("."):
        node = node[part]
    return list(node)


def _loading_problems(cfg, training, datasets):
    """`dataset_problems` of each dataset the run reads that is not generated on first use."""
    if datasets is None:
        datasets = (list(cfg.DATASETS.TRAIN) if training else []) + list(cfg.DATASETS.TEST)
    registered, problems = set(DatasetCatalog.list()), []
    for name in dict.fromkeys(datasets):
        if name not in registered:
            problems.append(f"dataset {name!r} is not registered. Registered: "
                            f"{', '.join(sorted(registered))}")
        elif name not in generated_dataset_names():
            problems += dataset_problems(name)
    return problems


def check_config(cfg, training=False, resume=False, datasets=None):
    """Everything the run needs, checked before anything is written: datasets registered and
    their files present, then each dataset the run reads loaded in full (`datasets`, default
    DATASETS.TRAIN when `training` and DATASETS.TEST: every record of its COCO file and every
    image file; the loaded dicts serve the run), proposal files, weights and DeepMask weights
    present, lists that must not be empty, the device; with `training`, that the model has
    something to train; with `resume`, that OUTPUT_DIR/last_checkpoint names a checkpoint.
    Raises one ConfigError naming every problem."""
    validate_catalog()  # datasets users registered after importing sharpmask, too
    problems = _dataset_problems(cfg)
    if not problems:
        problems = _loading_problems(cfg, training, datasets)
    problems += _file_problems(cfg) + _value_problems(cfg)
    resume_problem = last_checkpoint_problem(cfg.OUTPUT_DIR) if resume else None
    if resume_problem:
        problems.append(resume_problem)
    if training and cfg.MODEL.META_ARCHITECTURE == "SelectiveSearch":
        problems.append("SelectiveSearch has nothing to train: evaluate it with --eval-only, "
                        "or write its proposals with tools/dump_proposals.py")
    if problems:
        raise ConfigError(problems)
