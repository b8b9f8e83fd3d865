"""DeepMask/SharpMask train as the official Torch code does (TrainerDeepMask.lua,
TrainerSharpMask.lua, train.lua): the loss scaling, across processes too; one batch kind per
iteration on every process; only the head in use moves; the optimisers and lr schedules; the
patch evaluation."""
import types

import numpy as np
import pytest
import torch
import torch.distributed as dist
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.events import EventStorage

from model_helpers import build, load_cfg
from sharpmask.data.build import build_patch_mapper, build_patch_sampler, build_patch_train_loader
from sharpmask.engine import Trainer
from sharpmask.engine.amp import CPUAMPTrainer
from sharpmask.engine.idle_head import IdleHeadHook
from sharpmask.engine.lr_schedule import build_lr_scheduler
from sharpmask.engine.optimizer import build_optimizer
from sharpmask.evaluation.patch_evaluation import PatchEvaluator

DM = "configs/shapes/deepmask_R18_shapes.yaml"
# The official loss scaling, frozen BatchNorm (as on COCO) so that a batch split over
# processes computes what the whole batch does; a global batch of 32.
OFFICIAL = ["MODEL.DEEPMASK.MASK_LOSS_REDUCTION", "sum", "MODEL.RESNETS.NORM", "FrozenBN",
            "SOLVER.IMS_PER_BATCH", "32"]


def _patches(cfg, kind, count, seed=0):
    dicts = DatasetCatalog.get("shapes_val_mini")
    sampler, mapper = build_patch_sampler(cfg, dicts), build_patch_mapper(cfg, dicts)
    rng = np.random.default_rng(seed)
    draw = sampler.sample_mask if kind == "mask" else sampler.sample_score
    return [mapper(draw(rng)) for _ in range(count)]


def _official_mask_loss(mask_logits, targets):
    """The official criterion's value times the batch size: the sum over samples of each
    sample's mean per-pixel logistic loss, written out (log(1 + e^x) - t x)."""
    per_pixel = torch.log1p(torch.exp(-mask_logits.abs())) + mask_logits.clamp(min=0) \
        - targets * mask_logits
    return per_pixel.mean(dim=(1, 2)).sum()


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_mask_loss_and_gradient_are_the_official_sum(repo_root):
    torch.manual_seed(0)
    model, cfg = build(repo_root, DM, *OFFICIAL)
    assert model.mask_loss_scale == 32
    batch = _patches(cfg, "mask", 32)
    model.train()
    with EventStorage():
        losses = model(batch)
    losses["loss_mask"].backward()
    ours = _grads(model)
    model.zero_grad()
    mask_logits, _ = model.patch_logits(batch)
    targets = torch.stack([x["gt_mask"] for x in batch]).float()
    official = _official_mask_loss(mask_logits, targets)
    official.backward()
    assert losses["loss_mask"].item() == pytest.approx(official.item(), rel=1e-5)
    assert losses["loss_score"].item() == 0
    expected = _grads(model)
    assert set(ours) == set(expected) and any(v.abs().sum() > 0 for v in ours.values())
    for name in expected:
        torch.testing.assert_close(ours[name], expected[name], rtol=1e-4, atol=1e-7)


def test_coco_configs_have_the_official_scaling_optimisers_and_schedules(repo_root):
    from sharpmask.modeling.deepmask import DeepMask
    expected = {  # (momentum, weight decay, lr before/after each drop)
        "configs/deepmask_R50.yaml": (0.9, 5e-4, [(199990, 1e-3), (200000, 5e-4),
                                                  (479990, 5e-4), (480000, 1e-4)]),
        "configs/sharpmask_R50.yaml": (0.0, 0.0, [(199990, 1e-3), (200000, 5e-4),
                                                  (319990, 5e-4), (320000, 1e-4)]),
    }
    for config, (momentum, decay, lrs) in expected.items():
        cfg = load_cfg(repo_root, config, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "")
        assert cfg.SOLVER.MAX_ITER == 1_200_000 and cfg.TEST.PATCH_EVAL.PERIOD == 8000
        assert DeepMask.from_config(cfg)["mask_loss_scale"] == 32
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = build_optimizer(cfg, torch.nn.Linear(1, 1))
        assert {g["momentum"] for g in optimizer.param_groups} == {momentum}
        assert {g["weight_decay"] for g in optimizer.param_groups} == {decay}
        schedule = build_lr_scheduler(cfg, torch.optim.SGD([parameter], lr=cfg.SOLVER.BASE_LR))
        for iteration, lr in lrs:  # (fvcore's schedules step ~1 iteration early at 1.2M)
            assert schedule._multiplier(iteration / cfg.SOLVER.MAX_ITER) * 1e-3 == \
                pytest.approx(lr), (config, iteration)


def test_only_the_head_in_use_moves(repo_root):
    """With momentum and weight decay, a score batch leaves the mask branch and its optimizer
    state exactly as they were, and a mask batch the score branch, as the official per-head
    optimizer states do; the shared trunk moves on both."""
    torch.manual_seed(0)
    model, cfg = build(repo_root, DM, "SOLVER.OPTIMIZER", "SGD", "SOLVER.BASE_LR", "0.01",
                       "SOLVER.MOMENTUM", "0.9", "SOLVER.WEIGHT_DECAY", "0.0005")
    optimizer = build_optimizer(cfg, model)
    hook = IdleHeadHook()
    hook.trainer = types.SimpleNamespace(model=model)
    model.train()
    branches = {"mask": model.head.mask, "score": model.head.score}
    with EventStorage():
        for kind in ("mask", "score", "mask", "score"):
            idle = branches["score" if kind == "mask" else "mask"]
            before = {n: p.detach().clone() for n, p in idle.named_parameters()}
            used = [p.detach().clone() for p in branches[kind].parameters()]
            state = {n: {k: v.clone() for k, v in optimizer.state[p].items()}
                     for n, p in idle.named_parameters() if p in optimizer.state}
            trunk = model.head.embed.weight.detach().clone()
            losses = model(_patches(cfg, kind, 4))
            optimizer.zero_grad()
            sum(losses.values()).backward()
            hook.after_backward()
            optimizer.step()
            for n, p in idle.named_parameters():
                assert torch.equal(p, before[n]), (kind, n)
                for k, v in state.get(n, {}).items():
                    assert torch.equal(optimizer.state[p][k], v), (kind, n, k)
            assert not torch.equal(model.head.embed.weight, trunk)
            assert any(not torch.equal(p, q) for p, q in zip(branches[kind].parameters(), used))


def test_score_loss_is_the_official_soft_margin_mean(repo_root):
    """A score batch: the official SoftMarginCriterion, the mean over samples of
    log(1 + exp(-y s)) with labels y = +-1 from the sampler, written out here; no mask loss."""
    torch.manual_seed(0)
    model, cfg = build(repo_root, DM, *OFFICIAL)
    batch = _patches(cfg, "score", 16)
    signs = torch.tensor([1.0 if x["label"] else -1.0 for x in batch])
    assert 0 < (signs > 0).sum() < len(batch)
    model.train()
    torch.manual_seed(1)  # the same dropout in the score branch for both passes
    with EventStorage():
        losses = model(batch)
    torch.manual_seed(1)
    _, score_logits = model.patch_logits(batch)
    official = torch.log1p(torch.exp(-signs * score_logits.detach())).mean()
    assert losses["loss_score"].item() == pytest.approx(official.item(), rel=1e-5)
    assert losses["loss_mask"].item() == 0


@pytest.mark.parametrize("amp", ["False", "True"])
def test_trainer_leaves_the_idle_branch_alone_in_a_real_step(repo_root, tmp_path, amp):
    """`Trainer` (and on a CPU with SOLVER.AMP, `CPUAMPTrainer`) runs the idle-head rule in its
    own training step: after one SGD step with weight decay (which moves every parameter
    that has a gradient, even a zero one), the branch the batch did not use is exactly as it
    was; the trunk and the branch in use moved."""
    cfg = load_cfg(repo_root, DM, "SOLVER.OPTIMIZER", "SGD", "SOLVER.BASE_LR", "0.01",
                   "SOLVER.WEIGHT_DECAY", "0.1", "SOLVER.WARMUP_ITERS", "0",
                   "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "4",
                   "DATALOADER.NUM_WORKERS", "0", "DATASETS.TRAIN", "('shapes_val_mini',)",
                   "DATASETS.TEST", "()", "SOLVER.AMP.ENABLED", amp,
                   "OUTPUT_DIR", str(tmp_path))
    trainer = Trainer(cfg)
    assert isinstance(trainer._trainer, CPUAMPTrainer) == (amp == "True")
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    used = model.last_batch_kind
    idle = "score" if used == "mask" else "mask"
    assert used in ("mask", "score")
    assert not [n for n in moved if n.startswith(f"head.{idle}.")]
    assert [n for n in moved if n.startswith(f"head.{used}.")]
    assert [n for n in moved if n.startswith("trunk.")]


def _two_process_worker(rank, repo_root, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model, cfg = build(repo_root, DM, *OFFICIAL, "SEED", "-1", "DATALOADER.NUM_WORKERS", "0",
                       "DATASETS.TRAIN", "('shapes_val_mini',)")
    model.train()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    batch = _patches(cfg, "mask", 32)[16 * rank:16 * (rank + 1)]
    with EventStorage():
        losses = ddp(batch)
    sum(losses.values()).backward()
    loader = iter(build_patch_train_loader(cfg))  # the seed is shared (comm.shared_random_seed)
    batches = [next(loader) for _ in range(12)]
    torch.save({"grads": _grads(model), "kinds": [b[0]["kind"] for b in batches],
                "mixed": any(len({x["kind"] for x in b}) > 1 for b in batches),
                "images": [x["image"] for b in batches for x in b]}, f"{out_dir}/{rank}.pth")
    dist.destroy_process_group()


def test_two_processes_give_the_global_batch_gradient_and_share_batch_kinds(repo_root,
                                                                            tmp_path):
    """2 gloo processes on 16 + 16 samples: after DDP's averaging, the gradient of 1 process
    on the 32; and every iteration both processes draw the same batch kind (their patches
    differ)."""
    torch.multiprocessing.spawn(_two_process_worker, nprocs=2,
                                args=(repo_root, str(tmp_path / "init"), str(tmp_path)))
    ranks = [torch.load(tmp_path / f"{r}.pth") for r in range(2)]
    torch.manual_seed(0)
    model, cfg = build(repo_root, DM, *OFFICIAL)
    model.train()
    with EventStorage():
        losses = model(_patches(cfg, "mask", 32))
    sum(losses.values()).backward()
    expected = _grads(model)
    for rank in ranks:
        assert set(rank["grads"]) == set(expected)
        for name, value in expected.items():
            torch.testing.assert_close(rank["grads"][name], value, rtol=1e-4, atol=1e-6)
    assert ranks[0]["kinds"] == ranks[1]["kinds"] and set(ranks[0]["kinds"]) == {"mask", "score"}
    assert not ranks[0]["mixed"] and not ranks[1]["mixed"]
    assert any(not torch.equal(a, b) for a, b in zip(ranks[0]["images"], ranks[1]["images"]))


class _OracleModel(torch.nn.Module):
    """Returns the target itself as the mask for every other patch and nothing for the rest,
    and a positive score for every patch: known IoUs and accuracy."""

    def patch_logits(self, batch):
        masks = torch.stack([x["gt_mask"].float() if x.get("gt_mask") is not None
                             else torch.zeros(56, 56) for x in batch])
        masks = (masks * 2 - 1) * 10
        masks[1::2] = -10.0
        return masks, torch.ones(len(batch))


def test_patch_evaluation_measures_iou_recall_and_accuracy(repo_root):
    cfg = load_cfg(repo_root, DM)
    evaluator = PatchEvaluator(cfg, ("shapes_val_mini",), 40, seed=0, batch_size=8)
    metrics = evaluator.evaluate(_OracleModel())
    positives = np.mean([spec.label for spec in evaluator.score_specs])
    # Per category: the share of its patches at even positions (those the oracle gets right),
    # the category read from the dataset's own annotation of each patch's centred object.
    dicts = DatasetCatalog.get("shapes_val_mini")
    names = MetadataCatalog.get("shapes_val_mini").thing_classes
    right = {}
    for k, spec in enumerate(evaluator.mask_specs):
        name = names[dicts[spec.image_index]["annotations"][spec.annotation_index]["category_id"]]
        right.setdefault(f"mean_iou/{name}", []).append(100.0 * (k % 2 == 0))
    assert len(right) > 3
    assert metrics == pytest.approx({
        "mean_iou": 50.0, "median_iou": 50.0, "recall@0.5": 50.0, "recall@0.7": 50.0,
        "score_accuracy": 100 * positives, **{c: np.mean(v) for c, v in right.items()}})
    again = PatchEvaluator(cfg, ("shapes_val_mini",), 40, seed=0, batch_size=8)
    assert [s.center for s in again.mask_specs] == [s.center for s in evaluator.mask_specs]
