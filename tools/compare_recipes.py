#!/usr/bin/env python
"""Train one DeepMask/SharpMask/InstanceFCN config under several training recipes (sets of
config overrides) and print how each learns: DeepMask/SharpMask's patch evaluation (mask IoU,
recall, score accuracy), InstanceFCN's training-window metrics (assembled mask IoU of the
positive windows, objectness accuracy on positives and negatives; detectron2's 20-iteration
medians). How the shapes configs' optimiser, loss weights and learning rates were chosen.

    python tools/compare_recipes.py --config configs/shapes/deepmask_R18_shapes.yaml \
        --recipe "AdamW, mean" MODEL.DEEPMASK.MASK_LOSS_REDUCTION mean \
        --recipe "AdamW, sum" MODEL.DEEPMASK.MASK_LOSS_REDUCTION sum \
        [--output output/recipes] [--seeds 42 43] [--opts KEY VALUE ...]

Only the patch evaluation runs (TEST.PATCH_EVAL, on the config's test set); the full-image
evaluation is skipped. `--every N` keeps one row per N iterations. Writes a Markdown table to OUTPUT/<config name>.md.
"""
import argparse
import json
import os

from detectron2.config import get_cfg
from detectron2.utils.logger import setup_logger

from sharpmask import add_sharpmask_config
from sharpmask.engine.trainer import TrainOnlyTrainer
from sharpmask.utils.atomic_io import atomic_open

PATCH_METRICS = ["patch/mean_iou", "patch/recall@0.5", "patch/recall@0.7",
                 "patch/score_accuracy"]  # already in %
WINDOW_METRICS = ["instancefcn/window_mask_iou", "instancefcn/positive_accuracy",
                  "instancefcn/negative_accuracy"]  # fractions


def load_cfg(config, opts):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg.merge_from_file(config)
    cfg.merge_from_list(opts)
    cfg.freeze()
    return cfg


def train(config, opts, output_dir, metrics):
    cfg = load_cfg(config, opts + ["OUTPUT_DIR", output_dir])
    final = os.path.join(output_dir, "model_final.pth")
    if not os.path.exists(final):  # finished runs are reused
        os.makedirs(output_dir, exist_ok=True)
        trainer = TrainOnlyTrainer(cfg)
        trainer.resume_or_load(resume=True)
        trainer.train()
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if metrics[0] in line]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--recipe", nargs="+", action="append", required=True,
                        metavar=("NAME", "KEY VALUE"), help="a name, then config overrides")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--output", default="output/recipes")
    parser.add_argument("--opts", nargs="+", default=[], help="overrides for every recipe")
    parser.add_argument("--every", type=int, default=1, help="a row per this many iterations")
    args = parser.parse_args()
    windows = load_cfg(args.config, args.opts).MODEL.META_ARCHITECTURE == "InstanceFCN"
    metrics, percent = (WINDOW_METRICS, 100.0) if windows else (PATCH_METRICS, 1.0)
    setup_logger(name="sharpmask")
    setup_logger()
    name = os.path.splitext(os.path.basename(args.config))[0]
    lines = [f"Patch evaluation of `{args.config}` (`tools/compare_recipes.py`), "
             f"seeds {args.seeds}, extra options {args.opts}", "",
             "| recipe | seed | iteration | " + " | ".join(m.split("/")[1] for m in metrics)
             + " |", "|---|---:|---:|" + "---:|" * len(metrics)]
    for recipe_name, *opts in args.recipe:
        for seed in args.seeds:
            folder = os.path.join(args.output, name, recipe_name.replace(" ", "_").replace(
                ",", ""), str(seed))
            rows = [row for row in train(args.config, args.opts + opts + ["SEED", str(seed)],
                                         folder, metrics)
                    if (row["iteration"] + 1) % args.every == 0]
            for row in rows:
                lines.append(f"| {recipe_name} | {seed} | {row['iteration']} | " + " | ".join(
                    f"{percent * row[m]:.1f}" if m in row else "-" for m in metrics) + " |")
            print("\n".join(lines[-len(rows):]), flush=True)
    text = "\n".join(lines) + "\n"
    with atomic_open(os.path.join(args.output, f"{name}.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
