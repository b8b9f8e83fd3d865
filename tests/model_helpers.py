"""Building DeepMask/SharpMask models from the repository's configs for tests."""
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from sharpmask import add_sharpmask_config


def load_cfg(repo_root, config, *opts):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg.merge_from_file(str(repo_root / config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
                         "MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS", "", *opts])
    return cfg


def build(repo_root, config, *opts):
    cfg = load_cfg(repo_root, config, *opts)
    return build_model(cfg), cfg
