"""The two proposal plots of the DeepMask paper (Fig. 4): AR vs. number of proposals, and
recall vs. IoU threshold at 10/100/1000 proposals, for masks and boxes side by side."""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..utils.atomic_io import atomic_open  # noqa: E402
from .proposal_recall import PLOT_IOU_THRESHOLDS  # noqa: E402

TASK_TITLES = {"segm": "segmentation proposals", "bbox": "box proposals"}


def _save(fig, path):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    with atomic_open(path, "wb") as f:
        f.write(buffer.getvalue())


def plot_ar_vs_proposals(curves, path, label):
    """curves: {task: {"ar_vs_k": (K,) AR in [0, 1] at 1..K proposals}}."""
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (task, curve) in zip(axes[0], curves.items()):
        ar = np.asarray(curve["ar_vs_k"])
        ax.semilogx(np.arange(1, len(ar) + 1), 100 * ar, label=label)
        ax.set(xlabel="number of proposals", ylabel="average recall (%)",
               title=TASK_TITLES.get(task, task), xlim=(1, len(ar)), ylim=(0, 100))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left")
    _save(fig, path)


def plot_ap_vs_proposals(curves, path):
    """curves: {source: {number of proposals: detector AP (%)}}, one line per source (the
    DeepMask paper's Fig. 5 and SharpMask's Table 4 question)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for source, points in curves.items():
        counts = sorted(points)
        ax.semilogx(counts, [points[c] for c in counts], marker="o", label=source)
    ax.set(xlabel="proposals per image", ylabel="detector box AP (%)",
           title="Fast R-CNN box AP against the number of proposals")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best")
    _save(fig, path)


def plot_recall_vs_iou(curves, path, label, num_proposals=(10, 100, 1000)):
    """curves: {task: {"recall_vs_iou": (T, K) recall at PLOT_IOU_THRESHOLDS x 1..K}}."""
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (task, curve) in zip(axes[0], curves.items()):
        recall = np.asarray(curve["recall_vs_iou"])
        for k in num_proposals:
            if k <= recall.shape[1]:
                ax.plot(PLOT_IOU_THRESHOLDS, 100 * recall[:, k - 1], marker="o", markersize=3,
                        label=f"{label}, {k} proposals")
        ax.set(xlabel="IoU threshold", ylabel="recall (%)", title=TASK_TITLES.get(task, task),
               xlim=(0.5, 1.0), ylim=(0, 100))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    _save(fig, path)
