"""SOLVER.AMP.ENABLED on a CPU: the proposal networks train under bfloat16 autocast."""
import pytest
import torch
from detectron2.config import get_cfg

from sharpmask import add_sharpmask_config
from sharpmask.engine import merge_config
from sharpmask.engine.amp import CPUAMPTrainer
from sharpmask.engine.trainer import Trainer

CONFIGS = {"DeepMask": "configs/shapes/deepmask_R18_shapes.yaml",
           "SharpMask": "configs/shapes/sharpmask_R18_shapes.yaml",
           "InstanceFCN": "configs/shapes/instancefcn_R18_shapes.yaml"}


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_amp_trains_in_bfloat16_on_cpu(repo_root, tmp_path, method):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg = merge_config(cfg, str(repo_root / CONFIGS[method]), [
        "SOLVER.AMP.ENABLED", "True", "DATASETS.TRAIN", "('shapes_val_mini',)",
        "DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "(100,)", "SOLVER.MAX_ITER", "2",
        "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "", "OUTPUT_DIR", str(tmp_path),
        # bfloat16 convolutions are slow on CPUs without native bf16 (AVX2): small images
        "INPUT.INSTANCEFCN.TRAIN_SCALES", "[0.25]"])
    trainer = Trainer(cfg)
    assert isinstance(trainer._trainer, CPUAMPTrainer)
    model = trainer.model
    conv_dtypes = set()
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, inputs, output: conv_dtypes.add(output.dtype))
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    assert conv_dtypes == {torch.bfloat16}  # the forward pass ran in bfloat16
    after = dict(model.named_parameters())
    assert all(after[n].dtype == torch.float32 and torch.isfinite(after[n]).all()
               for n in trainable)  # master weights stay float32
    assert sum(not torch.equal(after[n], p) for n, p in trainable.items()) > len(trainable) // 2
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(v)) for v, _ in losses)
