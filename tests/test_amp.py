"""SOLVER.AMP.ENABLED on a CPU: the proposal networks train under bfloat16 autocast; TEST.AMP:
they infer under it and rank in float32."""
import pytest
import torch
from detectron2.config import get_cfg

from sharpmask import add_sharpmask_config
from sharpmask.engine import merge_config
from sharpmask.engine.amp import CPUAMPTrainer
from sharpmask.engine.progress import SHAPES_DEMO_CONFIGS as CONFIGS
from sharpmask.engine.trainer import Trainer
from sharpmask.modeling.dense_inference import dense_proposals


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_amp_trains_in_bfloat16_on_cpu(repo_root, tmp_path, method):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg = merge_config(cfg, str(repo_root / CONFIGS[method]), [
        "SOLVER.AMP.ENABLED", "True", "DATASETS.TRAIN", "('shapes_val_mini',)",
        "DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "(100,)", "SOLVER.MAX_ITER", "2",
        "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "", "MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS", "",
        "OUTPUT_DIR", str(tmp_path),
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


def _inference_model(repo_root, method, *opts):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg = merge_config(cfg, str(repo_root / CONFIGS[method]), [
        "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "", "MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS", "",
        "MODEL.DEEPMASK.TEST_SCALES", "[0.5, 1.0]",
        "MODEL.INSTANCEFCN.TEST_SCALES", "[0.5, 1.0]", *opts])
    torch.manual_seed(0)
    return Trainer.build_model(cfg).eval()


def _propose_with_window_scores(model, image, monkeypatch):
    """model.propose(image) -> (proposals, all windows' scores of all levels, as ranked)."""
    import sharpmask.modeling.deepmask as deepmask_module
    import sharpmask.modeling.instancefcn as instancefcn_module

    seen = []

    def recording(levels, *args, **kwargs):
        seen.append(torch.cat([lv.scores.flatten() for lv in levels]))
        return dense_proposals(levels, *args, **kwargs)
    for module in (deepmask_module, instancefcn_module):
        monkeypatch.setattr(module, "dense_proposals", recording)
    proposals = model.propose(image, top_k=50)
    return proposals, seen[0]


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_amp_inference_runs_the_network_in_bfloat16_and_ranks_in_float32(repo_root, method,
                                                                         monkeypatch):
    """The trunk runs in bfloat16, the proposals come out in float32, and the top 50 windows
    are the float32 network's, up to bfloat16's own error on a score: every window bfloat16
    ranks in its top 20 scores, in float32, at least the float32 20th best minus twice the
    largest score difference between the two runs (near-ties of random weights may swap)."""
    model = _inference_model(repo_root, method, "TEST.AMP.ENABLED", "True")
    assert model.inference_dtype == torch.bfloat16
    conv_dtypes = set()
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, inputs, output: conv_dtypes.add(output.dtype))
    image = torch.randint(0, 256, (3, 160, 224), dtype=torch.uint8, generator=torch.Generator()
                          .manual_seed(0))
    proposals, low = _propose_with_window_scores(model, image, monkeypatch)
    assert conv_dtypes == {torch.bfloat16} and low.dtype == torch.bfloat16
    scores = proposals.objectness_logits
    masks = proposals.proposal_masks.masks
    assert scores.dtype == masks.dtype == proposals.proposal_boxes.tensor.dtype == torch.float32
    assert len(scores) > 0 and bool((scores[:-1] >= scores[1:]).all())
    assert scores[0].item() == low.float().max().item()  # the best window is proposed first
    _, full = _propose_with_window_scores(_inference_model(repo_root, method), image, monkeypatch)
    assert full.dtype == torch.float32 and full.shape == low.shape and len(full) > 200
    error = (low.float() - full).abs().max().item()
    assert error < 0.05 * max(1.0, full.abs().max().item())  # bfloat16 keeps ~3 digits
    top_low = low.float().topk(20).indices
    cut = full.topk(20).values[-1].item()
    assert bool((full[top_low] >= cut - 2 * error).all())
    # Not trivially true: most windows score below the float32 cut by more than that.
    assert int((full < cut - 2 * error).sum()) > len(full) // 2


@pytest.mark.parametrize("dtype, device, problem", [
    ("float16", "cpu", "float16 is for GPUs"), ("half", "cpu", "must be one of")])
def test_amp_inference_config_errors(repo_root, dtype, device, problem):
    with pytest.raises(ValueError, match=problem):
        _inference_model(repo_root, "DeepMask", "TEST.AMP.ENABLED", "True",
                         "TEST.AMP.DTYPE", dtype, "MODEL.DEVICE", device)
