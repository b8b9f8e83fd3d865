#!/usr/bin/env python
"""`make demo`: train DeepMask, then SharpMask on top of it, on the embedded `shapes` set (CPU),
evaluate both on shapes_val, print one table, and draw the top proposals and the AR curves.
`make demo-all` (`--all`) trains and evaluates InstanceFCN as well (its trunk started from the
DeepMask).

Everything goes under one folder (default output/demo), named at the end. Detailed logs are in
its log.txt; the console shows one progress bar (with ETA) per stage.
"""
import argparse
import json
import os
import time

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402

from sharpmask.engine.progress import (build_demo_cfg, evaluate_with_progress,  # noqa: E402
                                       prepare_output, train_with_progress)
from sharpmask.engine.trainer import PATCH_TRAINED_META_ARCHITECTURES  # noqa: E402
from sharpmask.evaluation.patch_evaluation import PatchEvaluator  # noqa: E402
from sharpmask.utils.atomic_io import atomic_open  # noqa: E402

COLUMNS = [("segm", "AR@10"), ("segm", "AR@100"), ("segm", "AR@1000"), ("segm", "AR_s@1000"),
           ("segm", "AR_m@1000"), ("segm", "AR_l@1000"), ("segm", "AUC"), ("bbox", "AR@10"),
           ("bbox", "AR@100"), ("bbox", "AR@1000")]


def table(results):
    head = "| method | " + " | ".join(
        f"{'mask' if t == 'segm' else 'box'} {m}" for t, m in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    rows = [f"| {name} | " + " | ".join(f"{res[t][m]:.1f}" for t, m in COLUMNS) + " |"
            for name, res in results.items()]
    return "\n".join([head, rule, *rows])


PATCH_METRICS = ["mean_iou", "recall@0.5", "recall@0.7", "score_accuracy"]


def patch_metrics(models, cfgs):
    """The patch evaluation (TEST.PATCH_EVAL's fixed held-out shapes_val patches) of each final
    DeepMask/SharpMask: mask IoU and recall, score accuracy."""
    return {name: PatchEvaluator(cfg, cfg.DATASETS.TEST, cfg.TEST.PATCH_EVAL.NUM_PATCHES,
                                 cfg.TEST.PATCH_EVAL.SEED).evaluate(models[name])
            for name, cfg in cfgs.items()
            if cfg.MODEL.META_ARCHITECTURE in PATCH_TRAINED_META_ARCHITECTURES}


def patch_table(patch):
    head = ("| method | patch mask IoU (mean) | recall@0.5 | recall@0.7 | score accuracy |\n"
            "|---|---:|---:|---:|---:|")
    rows = [f"| {name} | " + " | ".join(f"{metrics[m]:.1f}" for m in PATCH_METRICS) + " |"
            for name, metrics in patch.items()]
    return "\n".join([head, *rows])


def seeds_table(runs):
    """Mean and range over seeds of each method's main numbers, and the orderings per seed."""
    columns = [("segm", "AR@10"), ("segm", "AR@100"), ("segm", "AR@1000"), ("bbox", "AR@100"),
               ("patch", "mean_iou")]
    names = list(next(iter(runs.values()))["results"])
    lines = ["| method | " + " | ".join(
        {"segm": "mask ", "bbox": "box ", "patch": "patch "}[t] + m.replace("mean_iou", "IoU")
        for t, m in columns) + " |", "|---|" + "---:|" * len(columns)]
    for name in names:
        cells = []
        for t, m in columns:
            values = [run["patch" if t == "patch" else "results"].get(name, {}) for run in
                      runs.values()]
            values = [v[m] if t == "patch" else v[t][m] for v in values if v]
            cells.append(f"{np.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})"
                         if values else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for seed, run in runs.items():
        ar = {n: run["results"][n]["segm"]["AR@100"] for n in names}
        ratios = ", ".join(f"{n}/DeepMask {ar[n] / ar['DeepMask']:.2f}" for n in names
                           if n != "DeepMask")
        lines.append(f"- seed {seed}: mask AR@100 " + ", ".join(f"{n} {v:.1f}"
                     for n, v in ar.items()) + f" ({ratios}); {run['minutes']:.1f} min")
    return "\n".join(lines)


def draw_proposals(models, cfg, path, top_k=10):
    """The top proposals of each model on one shapes_val image, side by side."""
    dataset = cfg.DATASETS.TEST[0]
    record = max(DatasetCatalog.get(dataset)[:20], key=lambda d: len(d["annotations"]))
    image = read_image(record["file_name"], format="RGB")
    panels = []
    for name, model in models.items():
        with torch.no_grad():
            proposals = model.eval().propose(torch.as_tensor(image.transpose(2, 0, 1).copy()),
                                             top_k=top_k)
        masks = torch.cat(list(proposals.proposal_masks.iter_pasted())).numpy()
        scores = torch.sigmoid(proposals.objectness_logits).tolist()
        vis = Visualizer(image, MetadataCatalog.get(dataset))
        out = vis.overlay_instances(masks=masks, labels=[f"{s:.2f}" for s in scores],
                                    alpha=0.35).get_image()
        cv2.putText(out, f"{name}: top {top_k}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                    (255, 255, 255), 2)
        panels.append(out)
    ok, png = cv2.imencode(".png", np.concatenate(panels, axis=1)[:, :, ::-1])
    with atomic_open(path, "wb") as f:
        f.write(png.tobytes())


def plot_curves(output_dir, names):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        folder = os.path.join(output_dir, name.lower(), "inference", "shapes_val")
        with open(os.path.join(folder, "proposal_curves.json")) as f:
            curves = json.load(f)
        for ax, task in zip(axes, ("segm", "bbox")):
            ar = 100 * np.asarray(curves[task]["ar_vs_k"])
            ax.semilogx(np.arange(1, len(ar) + 1), ar, label=name)
    for ax, task in zip(axes, ("mask", "box")):
        ax.set(xlabel="number of proposals", ylabel="average recall (%)",
               title=f"{task} proposals on shapes_val", ylim=(0, 100))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    path = os.path.join(output_dir, "ar_vs_num_proposals.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def run_demo(output_dir, opts, all_methods, command):
    """Train and evaluate the demo's methods into `output_dir`; write results.md and the
    pictures there. Returns {"results", "patch", "minutes"}."""
    start = time.time()
    results, models = {}, {}
    deepmask_cfg = build_demo_cfg("DeepMask", output_dir, opts)
    models["DeepMask"] = train_with_progress(deepmask_cfg, "DeepMask")
    sharpmask_cfg = build_demo_cfg("SharpMask", output_dir, opts)
    models["SharpMask"] = train_with_progress(sharpmask_cfg, "SharpMask")
    cfgs = {"DeepMask": deepmask_cfg, "SharpMask": sharpmask_cfg}
    if all_methods:
        cfgs["InstanceFCN"] = build_demo_cfg("InstanceFCN", output_dir, opts)
        models["InstanceFCN"] = train_with_progress(cfgs["InstanceFCN"], "InstanceFCN")
    for name, cfg in cfgs.items():
        DetectionCheckpointer(models[name]).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
        results[name] = evaluate_with_progress(cfg, models[name], name)
    patch = patch_metrics(models, cfgs)
    minutes = (time.time() - start) / 60
    text = (f"{table(results)}\n\nPatch evaluation of the final models (%, "
            f"{deepmask_cfg.TEST.PATCH_EVAL.NUM_PATCHES} held-out shapes_val patches of each "
            f"kind):\n\n{patch_table(patch)}")
    with atomic_open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(f"Proposal recall (%) on shapes_val (200 images), `{command}`, "
                f"{minutes:.1f} min on this machine (seed {deepmask_cfg.SEED})\n\n{text}\n")
    summary = {"results": results, "patch": patch, "minutes": minutes}
    with atomic_open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    draw_proposals(models, sharpmask_cfg, os.path.join(output_dir, "top_proposals.png"))
    plot_curves(output_dir, list(results))
    print(f"\nProposal recall (%) on shapes_val (200 images):\n\n{text}\n")
    print(f"Done in {minutes:.1f} min. Everything is in {output_dir}:")
    print("  results.md, top_proposals.png, ar_vs_num_proposals.png, log.txt, and per model "
          f"{', '.join(n.lower() + '/' for n in cfgs)} (checkpoints, inference/shapes_val/ "
          "metrics, proposals, plots)")
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="output/demo", help="folder for everything")
    parser.add_argument("--all", action="store_true", help="also train InstanceFCN")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="run the demo once per seed (in seed_<n>/; a seed whose "
                        "summary.json exists is not run again) and summarise the spread in "
                        "seeds.md; default: the configs' seed, once")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for all")
    args = parser.parse_args()
    output_dir = prepare_output(args.output)
    print("Generating the shapes dataset if needed (once, about a minute) ...", flush=True)
    DatasetCatalog.get("shapes_train")
    DatasetCatalog.get("shapes_val")
    command = "make demo-all" if args.all else "make demo"
    if not args.seeds:
        run_demo(output_dir, list(args.opts), args.all, command)
        return
    runs = {}
    for seed in args.seeds:
        folder = os.path.join(output_dir, f"seed_{seed}")
        if os.path.exists(os.path.join(folder, "summary.json")):
            with open(os.path.join(folder, "summary.json")) as f:
                runs[seed] = json.load(f)
            continue
        print(f"\n=== seed {seed} ===", flush=True)
        runs[seed] = run_demo(folder, list(args.opts) + ["SEED", seed], args.all, command)
    text = (f"`{command}` over seeds {', '.join(map(str, args.seeds))}: mean (min-max) on "
            f"shapes_val (200 images), %\n\n{seeds_table(runs)}\n")
    with atomic_open(os.path.join(output_dir, "seeds.md"), "w") as f:
        f.write(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
