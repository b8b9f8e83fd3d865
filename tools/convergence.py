#!/usr/bin/env python
"""`make convergence`: learning curves of the shapes proposal networks, far past the demo.

Each method is trained with its `make demo` config but a long schedule (LONG_RUNS: 4x the
demo's first schedules, 420 and 180 iterations; SharpMask and InstanceFCN start from this run's
final DeepMask),
with a checkpoint every `1 / --points` of the run. Every checkpoint is then evaluated on
shapes_val: mask and box AR@10/100/1000 (our evaluator) and, for DeepMask/SharpMask, the patch
mask IoU
(TEST.PATCH_EVAL's fixed held-out patches). Writes curves.json (one entry per checkpoint,
written as soon as it is measured), curves.md (the table) and convergence.png (AR@100 and patch
IoU against iterations, the demo's length marked; curves.md also has the patch IoU per
category).

Resumable: a rerun with the same arguments continues training where it stopped and evaluates
only the checkpoints not yet in curves.json.
"""
import argparse
import json
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402

from sharpmask.engine.progress import (build_demo_cfg, evaluate_with_progress,  # noqa: E402
                                       prepare_output, train_with_progress)
from sharpmask.engine.trainer import PATCH_TRAINED_META_ARCHITECTURES  # noqa: E402
from sharpmask.evaluation.patch_evaluation import PatchEvaluator  # noqa: E402
from sharpmask.utils.atomic_io import atomic_open  # noqa: E402

METRICS = [("segm", "AR@10"), ("segm", "AR@100"), ("segm", "AR@1000"), ("bbox", "AR@100")]


# (iterations, lr step) of each method's long run.
LONG_RUNS = {"DeepMask": (1680, 1440), "SharpMask": (720, 600), "InstanceFCN": (1680, 1440)}


def long_run_opts(name, points, seed):
    """Config overrides for the long run of `name`, and the demo's length (for the plot)."""
    max_iter, step = LONG_RUNS[name]
    return ["SOLVER.MAX_ITER", max_iter, "SOLVER.STEPS", (step,),
            "SOLVER.CHECKPOINT_PERIOD", max_iter // points, "TEST.PATCH_EVAL.PERIOD", 0,
            "SEED", seed], build_demo_cfg(name, "/tmp", []).SOLVER.MAX_ITER


def checkpoints(cfg):
    """(iteration, path) of every periodic checkpoint of the run, then the final one."""
    period, max_iter = cfg.SOLVER.CHECKPOINT_PERIOD, cfg.SOLVER.MAX_ITER
    found = [(it, os.path.join(cfg.OUTPUT_DIR, f"model_{it - 1:07d}.pth"))
             for it in range(period, max_iter, period)]
    return found + [(max_iter, os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))]


def evaluate_checkpoint(cfg, model, patch_evaluator, path, name, iteration):
    DetectionCheckpointer(model).load(path)
    folder = os.path.join(cfg.OUTPUT_DIR, "inference", f"iter_{iteration}")
    results = evaluate_with_progress(cfg, model, f"{name} @ {iteration}", folder)
    entry = {t: {m: results[t][m] for tt, m in METRICS if tt == t} for t in ("segm", "bbox")}
    if patch_evaluator is not None:
        entry["patch"] = patch_evaluator.evaluate(model)
    return entry


def write_table(curves, path):
    lines = ["| method | iteration | " + " | ".join(
        f"{'mask' if t == 'segm' else 'box'} {m}" for t, m in METRICS)
        + " | patch mask IoU | score accuracy | minutes trained |",
        "|---|---:|" + "---:|" * (len(METRICS) + 3)]
    for name, entries in curves.items():
        for it, e in sorted(entries.items(), key=lambda kv: int(kv[0])):
            patch = e.get("patch")
            lines.append(f"| {name} | {it} | " + " | ".join(f"{e[t][m]:.1f}" for t, m in METRICS)
                         + (f" | {patch['mean_iou']:.1f} | {patch['score_accuracy']:.1f}"
                            if patch else " | - | -") + f" | {e['train_minutes']:.1f} |")
    lines += ["", "Patch mask IoU by the category of the patch's centred object:", ""]
    lines += category_table(curves)
    with atomic_open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def category_table(curves):
    """Rows of the patch mask IoU per category, for each checkpoint that has it."""
    rows = [(name, it, e["patch"]) for name, entries in curves.items()
            for it, e in sorted(entries.items(), key=lambda kv: int(kv[0])) if "patch" in e]
    if not rows:
        return []
    categories = [k.split("/", 1)[1] for k in rows[0][2] if k.startswith("mean_iou/")]
    lines = ["| method | iteration | " + " | ".join(categories) + " |",
             "|---|---:|" + "---:|" * len(categories)]
    lines += [f"| {name} | {it} | " + " | ".join(
        f"{patch.get('mean_iou/' + c, float('nan')):.1f}" for c in categories) + " |"
        for name, it, patch in rows]
    return lines


def plot(curves, demo_iters, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, entries in curves.items():
        its = sorted(int(k) for k in entries)
        line, = axes[0].plot(its, [entries[str(i)]["segm"]["AR@100"] for i in its], "o-",
                             label=name)
        axes[0].axvline(demo_iters[name], color=line.get_color(), ls=":", alpha=0.6)
        if all("patch" in entries[str(i)] for i in its):
            axes[1].plot(its, [entries[str(i)]["patch"]["mean_iou"] / 100 for i in its], "o-",
                         color=line.get_color(), label=name)
    axes[0].set(xlabel="iterations (SharpMask, InstanceFCN: their own, after the DeepMask)",
                ylabel="mask AR@100 on shapes_val (%)", title="proposal recall (dotted: make demo)")
    axes[1].axhline(0.6, color="grey", ls="--", lw=1, label="0.6: the target for DeepMask")
    axes[1].set(xlabel="iterations", ylabel="mean patch mask IoU",
                title="patch mask IoU (256 held-out shapes_val patches)", ylim=(0, 1))
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="output/convergence", help="folder for everything")
    parser.add_argument("--methods", nargs="+", default=["DeepMask", "SharpMask", "InstanceFCN"],
                        choices=["DeepMask", "SharpMask", "InstanceFCN"])
    parser.add_argument("--points", type=int, default=6, help="checkpoints evaluated per run")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for all")
    args = parser.parse_args()
    output_dir = prepare_output(args.output)
    DatasetCatalog.get("shapes_train")
    DatasetCatalog.get("shapes_val")
    curves_path = os.path.join(output_dir, "curves.json")
    curves = {}
    if os.path.exists(curves_path):
        with open(curves_path) as f:
            curves = json.load(f)
    demo_iters = {}
    for name in args.methods:
        opts, demo_iters[name] = long_run_opts(name, args.points, args.seed)
        cfg = build_demo_cfg(name, output_dir, opts + list(args.opts))
        start = time.time()
        model = train_with_progress(cfg, f"{name} ({cfg.SOLVER.MAX_ITER} iterations)")
        seconds_per_iter = (time.time() - start) / cfg.SOLVER.MAX_ITER
        entries = curves.setdefault(name, {})
        patch_evaluator = PatchEvaluator(
            cfg, cfg.DATASETS.TEST, cfg.TEST.PATCH_EVAL.NUM_PATCHES, cfg.TEST.PATCH_EVAL.SEED) \
            if cfg.MODEL.META_ARCHITECTURE in PATCH_TRAINED_META_ARCHITECTURES else None
        for iteration, path in checkpoints(cfg):
            if str(iteration) in entries:
                continue
            entry = evaluate_checkpoint(cfg, model, patch_evaluator, path, name, iteration)
            # Training minutes at this checkpoint, from this run's time per iteration (a resumed
            # run's earlier part is timed by its later part).
            entry["train_minutes"] = iteration * seconds_per_iter / 60
            entries[str(iteration)] = entry
            with atomic_open(curves_path, "w") as f:
                json.dump(curves, f, indent=1)
            write_table(curves, os.path.join(output_dir, "curves.md"))
            plot(curves, demo_iters, os.path.join(output_dir, "convergence.png"))
    with open(os.path.join(output_dir, "curves.md")) as f:
        print(f.read())
    print(f"Everything is in {output_dir}: curves.md, curves.json, convergence.png, log.txt")


if __name__ == "__main__":
    main()
