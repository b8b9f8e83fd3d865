"""DeepMask/SharpMask networks: sizes, cell pairing, dense/patch consistency, freezing."""
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.events import EventStorage

from model_helpers import build, load_cfg
from sharpmask.data.build import build_patch_train_loader
from sharpmask.modeling.trunk import build_proposal_trunk

DM = "configs/shapes/deepmask_R18_shapes.yaml"
SM = "configs/shapes/sharpmask_R18_shapes.yaml"
NO_DM_WEIGHTS = ["MODEL.SHARPMASK.DEEPMASK_WEIGHTS", ""]


@pytest.mark.parametrize("depth,channels", [(18, (64, 64, 128, 256)), (50, (64, 256, 512, 1024))])
def test_trunk_features_and_channels(repo_root, depth, channels):
    extra = ["MODEL.RESNETS.RES2_OUT_CHANNELS", "64"] if depth == 18 else \
        ["MODEL.RESNETS.RES2_OUT_CHANNELS", "256"]
    cfg = load_cfg(repo_root, DM, "MODEL.RESNETS.DEPTH", str(depth), *extra)
    trunk = build_proposal_trunk(cfg).eval()
    with torch.no_grad():
        out = trunk(torch.zeros(1, 3, 192, 192))
    for (name, c), side in zip(zip(("conv1", "res2", "res3", "res4"), channels), (96, 48, 24, 12)):
        assert out[name].shape == (1, c, side, side)
        assert trunk.output_shape()[name].channels == c


def test_official_r50_sizes_and_parameter_counts(repo_root):
    model, _ = build(repo_root, "configs/sharpmask_R50.yaml", *NO_DM_WEIGHTS,
                     "MODEL.SHARPMASK.FREEZE_DEEPMASK", "False")
    deepmask = sum(p.numel() for m in (model.trunk, model.head) for p in m.parameters())
    refinement = sum(p.numel() for p in model.refinement.parameters())
    assert 15e6 < deepmask < 19e6  # "about 17 M parameters"
    assert refinement < 3e6  # "refinement adds < 3 M parameters"
    model.train()
    patches = [{"image": torch.randint(0, 255, (3, 192, 192), dtype=torch.uint8), "label": 1,
                "kind": "mask", "gt_mask": torch.zeros(160, 160, dtype=torch.uint8)}] * 2
    features = model.trunk(torch.stack([model.normalize(p["image"]) for p in patches]))
    vectors = model.head.embedding(model.crop_window(features["res4"], 16)).flatten(1)
    assert vectors.shape == (2, 512)
    assert model.head.mask_logits(vectors).shape == (2, 56, 56)
    assert model.patch_mask_logits(vectors, features).shape == (2, 160, 160)
    with EventStorage():
        losses = model(patches)
    assert set(losses) == {"loss_mask", "loss_score"} and losses["loss_mask"] > 0


@pytest.mark.parametrize("config", [DM, SM])
def test_score_and_mask_of_a_cell_come_from_that_cell(repo_root, config):
    """The dense score at (r, c) and the decoded mask are those of the window whose res4 cells
    are r..r+n-1, c..c+n-1, recomputed here from that crop alone."""
    torch.manual_seed(0)
    model, _ = build(repo_root, config, *NO_DM_WEIGHTS)
    model.eval()
    image = torch.randint(0, 255, (3, 150, 230), dtype=torch.uint8)
    with torch.no_grad():
        level, features, vectors = model.level_features(model.normalize(image), 1.0)
        n = model.window_cells
        rows, cols = level.scores.shape
        for r, c in [(0, 0), (rows // 2, cols // 2), (rows - 1, cols - 1)]:
            crop = features["res4"][:, :, r:r + n, c:c + n]
            vector = model.head.embedding(crop).flatten(1)
            assert torch.allclose(model.head.score_logits(vector), level.scores[r, c], atol=1e-4)
            decoded = model.decode_masks((dict(features), vectors), torch.tensor([r]),
                                         torch.tensor([c]))
            if config == DM:
                expected = torch.sigmoid(model.head.mask_logits(vector))
            else:  # horizontal paths on the window's own crop with a 3-cell margin
                crops = []
                for name, stage in zip(("res4", "res3", "res2", "conv1"), model.refinement.stages):
                    f = 16 // model.trunk.output_shape()[name].stride
                    full = features[name]
                    y0, x0 = max(r * f - 3, 0), max(c * f - 3, 0)
                    part = full[:, :, y0:(r + n) * f + 3, x0:(c + n) * f + 3]
                    h = stage.horizontal(part)
                    crops.append(h[:, :, r * f - y0:r * f - y0 + n * f,
                                   c * f - x0:c * f - x0 + n * f])
                expected = torch.sigmoid(model.refinement(vector, crops))
            assert torch.allclose(decoded, expected, atol=1e-5)


def _patch_batches(repo_root, cfg):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.merge_from_list(["DATASETS.TRAIN", "('shapes_val_mini',)", "SOLVER.IMS_PER_BATCH", "4",
                         "DATALOADER.NUM_WORKERS", "0"])
    return iter(build_patch_train_loader(cfg))


def test_sharpmask_loads_deepmask_and_trains_only_the_refinement(repo_root, tmp_path):
    torch.manual_seed(0)
    deepmask, _ = build(repo_root, DM)
    DetectionCheckpointer(deepmask, str(tmp_path)).save("deepmask")
    model, cfg = build(repo_root, SM, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS",
                       str(tmp_path / "deepmask.pth"))
    for name, value in deepmask.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    frozen = {k: v.clone() for k, v in model.state_dict().items()
              if k.startswith(("trunk.", "head."))}
    refinement = {k: v.clone() for k, v in model.refinement.state_dict().items()}
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in model.refinement.parameters()}
    optimizer = torch.optim.SGD(trainable, lr=0.1, momentum=0.9)
    batches = _patch_batches(repo_root, cfg)
    with EventStorage():
        for _ in range(2):
            losses = model(next(batches))
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    for name, value in model.state_dict().items():
        if name in frozen:
            assert torch.equal(value, frozen[name]), f"{name} changed"
    assert any(not torch.equal(v, refinement[k]) for k, v in model.refinement.state_dict().items())


def test_mismatched_deepmask_checkpoint_is_refused(repo_root, tmp_path):
    other, _ = build(repo_root, DM, "MODEL.DEEPMASK.EMBED_DIM", "128")
    DetectionCheckpointer(other, str(tmp_path)).save("other")
    with pytest.raises(ValueError, match="does not match this DeepMask"):
        build(repo_root, SM, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", str(tmp_path / "other.pth"))


def test_deepmask_patch_training_step(repo_root):
    torch.manual_seed(0)
    model, cfg = build(repo_root, DM)
    model.train()
    batches = _patch_batches(repo_root, cfg)
    with EventStorage():
        for _ in range(4):
            losses = model(next(batches))
            assert set(losses) == {"loss_mask", "loss_score"}
            assert all(torch.isfinite(v) for v in losses.values())
            sum(losses.values()).backward()
