"""Class-agnostic proposal recall exactly as pycocotools COCOeval computes it, for every K.

COCOeval (useCats=0) matches proposals to ground truth greedily in score order: each proposal
takes the best-IoU unmatched ground truth at or above the threshold (the later one on ties).
The matching of the top K proposals is therefore a prefix of the matching of all of them, so one
greedy pass gives, per ground-truth object and IoU threshold, the rank of the proposal that
recalls it; recall at any K (AR@10/100/1000, and the AUC over K = 1..1000) follows from a
histogram of those ranks. Crowd and out-of-range ground truth is "ignored" in COCOeval and never
takes a match from regular ground truth, so matching each area range against its regular
objects only gives COCOeval's numbers.
"""
import numpy as np

# COCOeval's thresholds (same expression, so the floats are identical), then 1.0 for the
# recall-vs-IoU plot; like COCOeval, a threshold of 1 is applied as 1 - 1e-10.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
PLOT_IOU_THRESHOLDS = np.append(IOU_THRESHOLDS, 1.0)
# COCOeval's area ranges (inclusive bounds, on the annotation's "area" field).
AREA_RANGES = {"all": (0, 1e5 ** 2), "small": (0, 32 ** 2), "medium": (32 ** 2, 96 ** 2),
               "large": (96 ** 2, 1e5 ** 2)}
UNMATCHED = np.iinfo(np.int32).max


def greedy_match_ranks(ious, thresholds=PLOT_IOU_THRESHOLDS):
    """Rank of the proposal matched to each ground truth, per IoU threshold.

    Args:
        ious: (D, G) IoUs of D proposals, sorted by decreasing score, with G ground truths.
        thresholds: (T,) IoU thresholds.
    Returns:
        (T, G) int32: index in 0..D-1 of the matching proposal, or UNMATCHED.
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2:
        raise ValueError(f"ious must be a (D, G) matrix, got shape {ious.shape}")
    num_dets, num_gts = ious.shape
    thr = np.minimum(np.asarray(thresholds, dtype=np.float64), 1 - 1e-10)[:, None]
    ranks = np.full((len(thr), num_gts), UNMATCHED, dtype=np.int32)
    if num_dets == 0 or num_gts == 0:
        return ranks
    matched = np.zeros((len(thr), num_gts), dtype=bool)
    rows = np.arange(len(thr))
    for d in np.nonzero(ious.max(axis=1) >= thr.min())[0]:
        candidates = (ious[d][None, :] >= thr) & ~matched
        if not candidates.any():
            continue
        scores = np.where(candidates, ious[d][None, :], -1.0)
        best = num_gts - 1 - np.argmax(scores[:, ::-1], axis=1)  # last maximum, as COCOeval
        hit = rows[candidates[rows, best]]
        matched[hit, best[hit]] = True
        ranks[hit, best[hit]] = d
        if matched.all():
            break
    return ranks


def recall_curve(ranks, max_dets):
    """(T, G) ranks pooled over images -> (T, max_dets) recall at K = 1..max_dets (NaN if G=0)."""
    num_thr, num_gts = ranks.shape
    if num_gts == 0:
        return np.full((num_thr, max_dets), np.nan)
    counts = np.stack([np.bincount(r[r < max_dets], minlength=max_dets) for r in ranks])
    return np.cumsum(counts, axis=1) / num_gts


def proposal_recall_metrics(per_image_ranks, max_dets=1000):
    """COCO-style AR metrics from per-image ranks.

    Args:
        per_image_ranks: list over images of {area range name: (T, G_area) ranks} computed at
            PLOT_IOU_THRESHOLDS.
    Returns:
        (metrics dict in percent, curves dict) where curves holds the recall arrays for plots.
    """
    curves = {}
    for area in AREA_RANGES:
        pooled = np.concatenate([r[area] for r in per_image_ranks], axis=1) if per_image_ranks \
            else np.zeros((len(PLOT_IOU_THRESHOLDS), 0), np.int32)
        curves[area] = recall_curve(pooled, max_dets)  # (T_plot, max_dets)
    num_coco = len(IOU_THRESHOLDS)
    ar = {area: curve[:num_coco].mean(axis=0) for area, curve in curves.items()}  # AR at each K
    metrics = {}
    for k in (10, 100, 1000):
        if k <= max_dets:
            metrics[f"AR@{k}"] = ar["all"][k - 1]
    for k in (100, 1000):
        if k <= max_dets:
            for area, tag in (("small", "s"), ("medium", "m"), ("large", "l")):
                metrics[f"AR_{tag}@{k}"] = ar[area][k - 1]
    metrics["AUC"] = ar["all"].mean()
    metrics = {name: float(value * 100) for name, value in metrics.items()}
    return metrics, {"ar_vs_k": ar["all"], "recall_vs_iou": curves["all"]}
