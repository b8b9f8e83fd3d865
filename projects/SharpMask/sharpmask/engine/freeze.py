"""MODEL.FROZEN_MODULES: train a detector on top of fixed, pre-trained parts of itself."""
from detectron2.layers import FrozenBatchNorm2d


def freeze_modules(model, names):
    """Stop gradients into the submodules `names` (as in `model.named_modules()`, e.g.
    "backbone", "roi_heads.box_head") and freeze their BatchNorm statistics.

    With the whole backbone frozen, its features need no gradient, so nothing is back-propagated
    through the backbone or the RoI pooling: Fast R-CNN on a fixed feature extractor.
    """
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        tops = sorted(n for n in modules if n and "." not in n)
        raise KeyError(f"MODEL.FROZEN_MODULES names {unknown}, which {type(model).__name__} "
                       f"does not have; its top-level modules are {tops}")
    for name in names:
        module = modules[name]
        for p in module.parameters():
            p.requires_grad_(False)
        FrozenBatchNorm2d.convert_frozen_batchnorm(module)  # in place (module is no BN itself)
    return model
