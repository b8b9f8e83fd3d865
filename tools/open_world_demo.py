#!/usr/bin/env python
"""`make open-world-demo`: the open-world proposal protocol on `shapes`, on a CPU.

Every method trains on the 4 seen shapes categories only (shapes_train_seen: ellipse, triangle,
star, ring; the other 4 stay in the images, unannotated) and is evaluated on all of shapes_val,
with recall on all, on the seen and on the unseen ground truth (SegmentProposalEvaluator's
open-world split):

- DeepMask, SharpMask (on that DeepMask) and InstanceFCN (its trunk started from that DeepMask),
  with the `make demo` shapes configs;
- detectron2's class-agnostic Mask R-CNN (configs/shapes/mask_rcnn_R18_FPN_shapes_class_agnostic
  .yaml: the seen objects as one class, started from the trunk of the DeepMask above), its
  detections ranked by score as proposals: the baseline of LDET's table;
- that Mask R-CNN's RPN alone (boxes only): the class-agnostic RPN baseline.

Everything goes under one folder (default output/open_world_demo); trained models and each
method's metrics are kept, so a rerun continues where it stopped. The table is written to
open_world.md there.
"""
import argparse
import os
import time

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from sharpmask import add_sharpmask_config
from sharpmask.data.datasets import SHAPES_SEEN_CATEGORIES
from sharpmask.engine.checkpoint import save_deepmask_trunk_as_fpn_bottom_up
from sharpmask.engine.progress import (build_demo_cfg, evaluate_with_progress, prepare_output,
                                       train_with_progress)
from sharpmask.utils.atomic_io import atomic_open, cached_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASK_RCNN = "configs/shapes/mask_rcnn_R18_FPN_shapes_class_agnostic.yaml"
SEEN_TRAIN = ["DATASETS.TRAIN", "('shapes_train_seen',)"]
METHODS = ["DeepMask", "SharpMask", "InstanceFCN", "MaskRCNN"]  # MaskRCNN: and its RPN
SUBSETS = (("", "all"), ("_seen", "seen"), ("_unseen", "unseen"))
COLUMNS = [(kind, k, subset) for kind in ("segm", "bbox")
           for k, subsets in ((100, SUBSETS), (1000, SUBSETS[2:])) for subset in subsets]


def cached_metrics(folder, compute):
    return cached_json(os.path.join(folder, "open_world_metrics.json"), compute)


def train_and_evaluate(cfg, description):
    """Train `cfg` (resumable) and evaluate its final model on DATASETS.TEST[0]."""
    def compute():
        model = train_with_progress(cfg, description)
        DetectionCheckpointer(model).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
        return evaluate_with_progress(cfg, model, description)
    return cached_metrics(cfg.OUTPUT_DIR, compute)


def detector_cfg(output_dir, opts, extra=()):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, MASK_RCNN))
    cfg.merge_from_list(list(opts) + [
        "MODEL.WEIGHTS", os.path.join(output_dir, "deepmask_trunk_R18.pth"),
        "MODEL.WEIGHTS_ALLOW_PARTIAL", "True",
        "OUTPUT_DIR", os.path.join(output_dir, "mask_rcnn"), *extra])
    cfg.freeze()
    return cfg


def rpn_metrics(cfg):
    """The trained Mask R-CNN's RPN alone (ProposalNetwork), box recall."""
    rpn_cfg = cfg.clone()
    rpn_cfg.defrost()
    rpn_cfg.MODEL.META_ARCHITECTURE = "ProposalNetwork"
    rpn_cfg.MODEL.MASK_ON = False
    rpn_cfg.TEST.SEGMENT_PROPOSALS.DETECTIONS_AS_PROPOSALS = False
    rpn_cfg.freeze()
    folder = os.path.join(cfg.OUTPUT_DIR, "rpn")
    os.makedirs(folder, exist_ok=True)

    def compute():
        model = build_model(rpn_cfg)
        DetectionCheckpointer(model).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
        return evaluate_with_progress(rpn_cfg, model, "RPN (class-agnostic)",
                                      os.path.join(folder, "inference"))
    return cached_metrics(folder, compute)


def run(output_dir, opts, methods):
    """Train and evaluate `methods` (every other method starts from the DeepMask, which is
    trained first if it is not there) -> ({method: metrics}, the test dataset)."""
    results = {}
    deepmask = build_demo_cfg("DeepMask", output_dir, opts + SEEN_TRAIN)
    deepmask_weights = os.path.join(deepmask.OUTPUT_DIR, "model_final.pth")
    if "DeepMask" in methods or set(methods) & {"SharpMask", "InstanceFCN", "MaskRCNN"}:
        results["DeepMask"] = train_and_evaluate(deepmask, "DeepMask (seen)")
    if "SharpMask" in methods:
        sharpmask = build_demo_cfg("SharpMask", output_dir, opts + SEEN_TRAIN)
        results["SharpMask"] = train_and_evaluate(sharpmask, "SharpMask (seen)")
    if "InstanceFCN" in methods:
        results["InstanceFCN"] = train_and_evaluate(
            build_demo_cfg("InstanceFCN", output_dir, opts + SEEN_TRAIN), "InstanceFCN (seen)")
    mask_rcnn = detector_cfg(output_dir, opts)
    if "MaskRCNN" in methods:
        trunk = os.path.join(output_dir, "deepmask_trunk_R18.pth")
        if not os.path.exists(trunk):
            save_deepmask_trunk_as_fpn_bottom_up(deepmask_weights, trunk)
        results["Mask R-CNN, class-agnostic (detectron2)"] = train_and_evaluate(
            mask_rcnn, "Mask R-CNN class-agnostic (seen)")
        results["RPN, class-agnostic (detectron2)"] = rpn_metrics(mask_rcnn)
    return results, mask_rcnn.DATASETS.TEST[0]


def value(metrics, kind, k, subset):
    task = metrics.get(kind + subset)
    return f"{task[f'AR@{k}']:.1f}" if task else "-"


def table(results):
    head = "| method | " + " | ".join(
        f"{'mask' if kind == 'segm' else 'box'} AR@{k} {name}" for kind, k, (_, name) in COLUMNS)
    rows = [f"| {method} | " + " | ".join(value(m, kind, k, s) for kind, k, (s, _) in COLUMNS)
            + " |" for method, m in results.items()]
    return "\n".join([head + " |", "|---|" + "---:|" * len(COLUMNS), *rows])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="output/open_world_demo", help="folder for everything")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated, of " + ",".join(METHODS) + ": train and "
                        "evaluate these only (e.g. InstanceFCN in a second process beside the "
                        "rest); the table lists what has been run")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for all")
    args = parser.parse_args()
    methods = args.methods.split(",")
    if set(methods) - set(METHODS):
        parser.error(f"unknown --methods {sorted(set(methods) - set(METHODS))}; "
                     f"choose from {','.join(METHODS)}")
    output_dir = prepare_output(args.output)
    print("Generating the shapes dataset if needed (once, about a minute) ...", flush=True)
    DatasetCatalog.get("shapes_train")
    DatasetCatalog.get("shapes_val")
    start = time.time()
    results, test = run(output_dir, list(args.opts), methods)
    minutes = (time.time() - start) / 60
    text = (f"Open-world proposal recall (%) on {test} ({len(DatasetCatalog.get(test))} "
            f"images): trained on the seen "
            f"categories {', '.join(SHAPES_SEEN_CATEGORIES)} (shapes_train_seen); 'unseen' is "
            f"the recall of the other 4 categories' objects. `make open-world-demo`, "
            f"{minutes:.1f} min on this machine (what was not already there).\n\n"
            f"{table(results)}\n")
    with atomic_open(os.path.join(output_dir, "open_world.md"), "w") as f:
        f.write(text)
    print("\n" + text)
    print(f"Everything is in {output_dir}")


if __name__ == "__main__":
    main()
