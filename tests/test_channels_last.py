"""MODEL.CHANNELS_LAST: the trunks compute in channels-last format with the same results."""
import pytest
import torch
from detectron2.config import get_cfg

from sharpmask import add_sharpmask_config
from sharpmask.engine import merge_config
from sharpmask.engine.progress import SHAPES_DEMO_CONFIGS
from sharpmask.engine.trainer import Trainer


def _model(repo_root, method, channels_last):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg = merge_config(cfg, str(repo_root / SHAPES_DEMO_CONFIGS[method]), [
        "MODEL.CHANNELS_LAST", str(channels_last), "MODEL.DEEPMASK.TEST_SCALES", "[1.0]",
        "MODEL.INSTANCEFCN.TEST_SCALES", "[1.0]", "MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS", ""])
    torch.manual_seed(0)
    return Trainer.build_model(cfg).eval()


@pytest.mark.parametrize("method", ["DeepMask", "InstanceFCN"])
def test_channels_last_trunk_gives_the_same_features(repo_root, method):
    plain, fast = _model(repo_root, method, False), _model(repo_root, method, True)
    convs = [m for m in fast.trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    first_plain = next(m for m in plain.trunk.modules() if isinstance(m, torch.nn.Conv2d))
    assert not first_plain.weight.is_contiguous(memory_format=torch.channels_last)
    inputs = []
    convs[0].register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    image = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        expected, got = plain.trunk(image)["res4"], fast.trunk(image)["res4"]
    assert inputs[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
