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


def saved_deepmask(repo_root, folder):
    """A shapes DeepMask whose every weight and BatchNorm statistic is moved off its
    initialisation (so no other model could share it by chance), saved as `folder`/deepmask.pth
    -> (model, checkpoint path)."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    torch.manual_seed(0)
    deepmask, _ = build(repo_root, "configs/shapes/deepmask_R18_shapes.yaml")
    with torch.no_grad():
        for t in [*deepmask.parameters(), *deepmask.buffers()]:
            if t.is_floating_point():
                t.add_(torch.rand_like(t))
    DetectionCheckpointer(deepmask, str(folder)).save("deepmask")
    return deepmask, str(folder / "deepmask.pth")
