"""DeepMask (Pinheiro et al., NIPS 2015), in the improved ResNet form of the official code."""
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage

from .deepmask_head import DeepMaskHead
from .dense_inference import PyramidLevel, dense_proposals, pyramid_geometry, resize_and_pad
from .proposal_network import SegmentProposalNetwork, inference_dtype
from .trunk import build_proposal_trunk

TRUNK_STRIDE = 16


@META_ARCH_REGISTRY.register()
class DeepMask(SegmentProposalNetwork):
    """Class-agnostic segment proposals from windows of a ResNet res4 map.

    Training input: patches from `DeepMaskPatchMapper` ({"image": (C, P, P) uint8, "label",
    "kind", "gt_mask" for mask samples}); returns {"loss_mask", "loss_score"}, zero for a kind
    the batch has none of. As in the official trainer, the score loss is the mean over score
    samples, and the mask loss with `mask_loss_scale` = the global batch size (MODEL.DEEPMASK.
    MASK_LOSS_REDUCTION "sum") is the sum over the global batch of each sample's per-pixel
    mean: this process's mean times the global batch, which DDP's gradient averaging over
    processes turns into the sum over all of them.

    Inference input: detectron2's test format ({"image": (C, H, W), "height", "width"});
    returns per image {"proposals": Instances} with proposal_boxes, objectness_logits and
    proposal_masks (WindowedMasks) in original image coordinates, best first.
    """

    @configurable
    def __init__(self, *, trunk, head, window, context, target_size, pixel_mean, pixel_std,
                 test_scales, test_pad, top_k, test_max_size=None, mask_threshold, nms_threshold,
                 decode_batch_size, mask_loss_weight=1.0, score_loss_weight=1.0,
                 mask_loss_scale=1.0, inference_dtype=None):
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, test_max_size=test_max_size,
                         inference_dtype=inference_dtype)
        self.trunk, self.head = trunk, head
        self.window, self.context, self.target_size = window, context, target_size
        self.window_cells, self.context_cells = window // TRUNK_STRIDE, context // TRUNK_STRIDE
        self.test_scales, self.test_pad = list(test_scales), test_pad
        self.top_k, self.mask_threshold, self.nms_threshold = top_k, mask_threshold, nms_threshold
        self.decode_batch_size = decode_batch_size
        self.mask_loss_weight, self.score_loss_weight = mask_loss_weight, score_loss_weight
        self.mask_loss_scale = mask_loss_scale
        self.last_batch_kind = None  # "mask" or "score": see idle_parameters()

    @classmethod
    def from_config(cls, cfg):
        dm = cfg.MODEL.DEEPMASK
        for key, value in (("WINDOW", dm.WINDOW), ("CONTEXT", dm.CONTEXT)):
            if value % TRUNK_STRIDE:
                raise ValueError(f"MODEL.DEEPMASK.{key} = {value} must be a multiple of the "
                                 f"trunk stride {TRUNK_STRIDE}")
        if dm.MASK_LOSS_REDUCTION not in ("sum", "mean"):
            raise ValueError(f"MODEL.DEEPMASK.MASK_LOSS_REDUCTION = {dm.MASK_LOSS_REDUCTION!r}; "
                             "use 'sum' (official) or 'mean'")
        trunk = build_proposal_trunk(cfg)
        head = DeepMaskHead(trunk.output_shape()["res4"].channels, dm.WINDOW // TRUNK_STRIDE,
                            dm.HEAD_CHANNELS, dm.EMBED_DIM, dm.MASK_SIZE, dm.SCORE_HIDDEN,
                            dm.DROPOUT)
        return {
            "trunk": trunk, "head": head, "window": dm.WINDOW, "context": dm.CONTEXT,
            "target_size": dm.TARGET_SIZE, "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD, "test_scales": dm.TEST_SCALES,
            "test_pad": dm.TEST_PAD, "top_k": dm.TEST_TOPK, "test_max_size": dm.TEST_MAX_SIZE,
            "mask_threshold": dm.MASK_THRESHOLD, "nms_threshold": dm.NMS_THRESH,
            "decode_batch_size": dm.DECODE_BATCH_SIZE, "inference_dtype": inference_dtype(cfg),
            "mask_loss_weight": dm.MASK_LOSS_WEIGHT, "score_loss_weight": dm.SCORE_LOSS_WEIGHT,
            "mask_loss_scale": (float(cfg.SOLVER.IMS_PER_BATCH)
                                if dm.MASK_LOSS_REDUCTION == "sum" else 1.0),
        }

    # ---------------------------------------------------------------- training on patches
    def crop_window(self, feature, stride):
        """(B, C, P/stride, P/stride) patch feature -> its central window cells."""
        factor = TRUNK_STRIDE // stride
        start, size = self.context_cells * factor, self.window_cells * factor
        return feature[:, :, start:start + size, start:start + size]

    def patch_mask_logits(self, vectors, features):
        """(B, E) window embeddings -> (B, S, S) mask logits over the window."""
        return self.head.mask_logits(vectors)

    def mask_branch(self):
        """The module that only mask samples train (the official maskBranch)."""
        return self.head.mask

    def idle_parameters(self):
        """Parameters of the branch the last training batch did not use: the official trainer
        steps only the head in use, so `IdleHeadHook` drops their gradients before the
        optimizer step (no momentum or weight decay moves them)."""
        idle = {"mask": self.head.score, "score": self.mask_branch()}.get(self.last_batch_kind)
        return [] if idle is None else list(idle.parameters())

    def patch_logits(self, batched_inputs):
        """Patches -> (mask logits (B, T, T) at the target size T, score logits (B,))."""
        images = torch.stack([self.normalize(x["image"]) for x in batched_inputs])
        features = self.trunk(images)
        vectors = self.head.embedding(self.crop_window(features["res4"], TRUNK_STRIDE))
        vectors = vectors.flatten(1)
        mask_logits = self.patch_mask_logits(vectors, features)
        if mask_logits.shape[-1] != self.target_size:
            mask_logits = F.interpolate(mask_logits[:, None], size=self.target_size,
                                        mode="bilinear", align_corners=False)[:, 0]
        return mask_logits, self.head.score_logits(vectors)

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        mask_logits, score_logits = self.patch_logits(batched_inputs)
        labels = torch.tensor([float(x["label"]) for x in batched_inputs], device=self.device)
        is_mask = torch.tensor([x["kind"] == "mask" for x in batched_inputs], device=self.device)
        kinds = {x["kind"] for x in batched_inputs}
        self.last_batch_kind = kinds.pop() if len(kinds) == 1 else None
        storage = get_event_storage()
        if is_mask.any():
            targets = torch.stack([x["gt_mask"] for x in batched_inputs if x["kind"] == "mask"])
            targets = targets.to(self.device).float()
            loss_mask = F.binary_cross_entropy_with_logits(mask_logits[is_mask], targets)
            storage.put_scalar("deepmask/mask_loss", loss_mask.item())
            loss_mask = loss_mask * self.mask_loss_scale
            # Per-kind curves (the summed losses' medians mix in other batches' zeros).
            predicted = mask_logits[is_mask].detach() > 0
            inter = (predicted & (targets > 0)).flatten(1).sum(1)
            union = (predicted | (targets > 0)).flatten(1).sum(1).clamp(min=1)
            storage.put_scalar("deepmask/patch_mask_iou", (inter / union).mean().item())
        else:
            loss_mask = mask_logits.sum() * 0.0  # keeps every parameter in the graph for DDP
        if (~is_mask).any():
            loss_score = F.binary_cross_entropy_with_logits(score_logits[~is_mask],
                                                            labels[~is_mask])
            accuracy = ((score_logits[~is_mask].detach() > 0).float() == labels[~is_mask])
            storage.put_scalar("deepmask/score_loss", loss_score.item())
            storage.put_scalar("deepmask/score_accuracy", accuracy.float().mean().item())
        else:
            loss_score = score_logits.sum() * 0.0
        return {"loss_mask": self.mask_loss_weight * loss_mask,
                "loss_score": self.score_loss_weight * loss_score}

    # ---------------------------------------------------------------- dense inference
    def level_features(self, image, scale):
        """Trunk features and window embeddings of one pyramid level."""
        height, width = image.shape[-2:]
        size, (sx, sy), padded = pyramid_geometry(height, width, scale, self.test_pad,
                                                  TRUNK_STRIDE, self.window)
        features = self.trunk(resize_and_pad(image, size, padded, self.test_pad))
        vectors = self.head.embedding(features["res4"])[0]  # (E, rows, cols)
        scores = self.head.score_logits(vectors.flatten(1).t()).view(vectors.shape[1:])
        return PyramidLevel(sx, sy, padded, scores), features, vectors

    def decode_masks(self, level_state, rows, cols):
        """Mask probabilities (n, S, S) of the windows at (rows, cols) of one level."""
        _features, vectors = level_state
        return torch.sigmoid(self.head.mask_logits(vectors[:, rows, cols].t()))

    def propose_windows(self, image, top_k=None):
        """Dense multi-scale inference of `propose` (top_k default: MODEL.DEEPMASK.TEST_TOPK)."""
        normalized = self.normalize(image)
        shrink = self.max_size_factor(image)
        levels, states = [], []
        for scale in self.test_scales:
            level, features, vectors = self.level_features(normalized, scale * shrink)
            levels.append(level)
            states.append((features, vectors))
        return dense_proposals(
            levels, lambda li, rows, cols: self.decode_masks(states[li], rows, cols),
            tuple(image.shape[-2:]), stride=TRUNK_STRIDE, window=self.window,
            pad=self.test_pad, top_k=top_k or self.top_k, mask_threshold=self.mask_threshold,
            nms_threshold=self.nms_threshold, batch_size=self.decode_batch_size,
        )
