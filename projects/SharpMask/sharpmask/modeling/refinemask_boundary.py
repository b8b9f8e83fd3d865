"""RefineMask's boundary rules: the band of the boundary-aware refinement (BAR) loss and the
boundary-only merge of finer stages at inference, as the official code computes them
(zhanggang001/RefineMask: `generate_block_target` in mmdet/models/losses/cross_entropy_loss.py,
`RefineCrossEntropyLoss`, `RefineRoIHead.simple_test_mask`). REFERENCE.md section 4."""
import torch.nn.functional as F

# A pixel is on the boundary when more than this fraction of its window has the other value.
BOUNDARY_FRACTION = 0.1


def block_boundary(masks, width):
    """(N, H, W) bool -> (N, H, W) bool: pixels whose (2 width + 1)^2 window holds more than
    10% of the other value, the window zero-padded at the RoI border (so foreground along the
    RoI's edge is boundary; background is never made boundary by the padding)."""
    size = 2 * width + 1
    x = F.pad(masks.float()[:, None], (width,) * 4)
    foreground = F.avg_pool2d(x, size, stride=1, divisor_override=1)[:, 0]  # exact counts
    other = (size * size - foreground).where(masks, foreground)
    return other > BOUNDARY_FRACTION * size * size


def upsample_band(band, size):
    """(N, h, w) bool band of a coarser stage -> (N, size, size) bool, as the official code
    carries it to the next stage: bilinear (align_corners) and kept where >= 0.5."""
    up = F.interpolate(band.float()[:, None], size=(size, size), mode="bilinear",
                       align_corners=True)
    return up[:, 0] >= 0.5


def upsample_logits(logits, size):
    """(N, h, w) -> (N, size, size), bilinear with align_corners as the official merge."""
    return F.interpolate(logits[:, None], size=(size, size), mode="bilinear",
                         align_corners=True)[:, 0]


def merge_stage(previous, logits, width):
    """Boundary-only refinement of one stage: pixels on the `width` band of the previous
    (coarser) mask `previous` (N, h, w) logits take the finer `logits` (N, 2h, 2w); the rest
    keep the previous logits, upsampled."""
    size = logits.shape[-1]
    band = upsample_band(block_boundary(previous >= 0, width), size)
    return logits.where(band, upsample_logits(previous, size))


def merge_stages(stage_logits, first_merged, width):
    """Inference: stages from `first_merged` on are merged into the previous *merged* stage,
    in turn; returns the list with those stages replaced (the last is the output mask)."""
    merged = list(stage_logits)
    for k in range(first_merged, len(merged)):
        merged[k] = merge_stage(merged[k - 1], merged[k], width)
    return merged


def bar_loss(stage_logits, targets, stage_weights, full_stages, width, merge_width):
    """The boundary-aware refinement loss.

    Args:
        stage_logits: per stage (N, S_k, S_k) mask logits, S_k doubling each stage.
        targets: per stage (N, S_k, S_k) binary float targets.
        full_stages: the first stages take the BCE over all pixels. A later stage k takes it
            averaged over a band found at the previous resolution: the `width` boundary of the
            previous binary prediction OR of the previous stage's target, upsampled x2. The
            previous prediction of stage k > full_stages is the stage k - 1 prediction merged
            (`merge_width`, as at inference) into its own previous one; with the official four
            stages this is exactly the official rule (which merges into the raw, not the
            merged, previous logits: the same for the one merge the loss needs).
    Returns:
        (sum_k weight_k * loss_k, [loss_k]).
    """
    losses, previous = [], None
    for k, (logits, target) in enumerate(zip(stage_logits, targets)):
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if k < full_stages:
            losses.append(per_pixel.mean())
            previous = logits.detach()
            continue
        band = block_boundary(previous >= 0, width) | block_boundary(targets[k - 1] > 0.5, width)
        band = upsample_band(band, logits.shape[-1])
        losses.append(per_pixel[band].sum() / band.sum().clamp(min=1))
        previous = merge_stage(previous, logits.detach(), merge_width)
    total = sum(w * loss for w, loss in zip(stage_weights, losses))
    return total, losses
