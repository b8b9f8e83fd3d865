#!/usr/bin/env python
"""Score a proposal file of any method on a registered dataset with our evaluator (box and
mask AR at 10/100/1000, by size, AUC; seen/unseen with --seen-categories).

    python tools/evaluate_proposals.py --dataset shapes_val --proposals ss_shapes_val.pkl
    python tools/evaluate_proposals.py --dataset coco_2014_val_first5k \
        --segm sharpmask_val5k.pkl.segm.json --output output/eval_sharpmask
    python tools/evaluate_proposals.py --dataset shapes_val --proposals rpn.pkl \
        --seen-categories ellipse rectangle triangle star

--proposals: detectron2's precomputed-proposal pickle (tools/dump_proposals.py writes it; box
recall only); --segm: COCO results with RLE masks (tools/dump_proposals.py --masks writes
<output>.segm.json; mask and box recall). The metrics are printed and, with --output, written
there with the plots and proposal files, as train_net's evaluation writes them.
"""
import argparse

from detectron2.utils.logger import create_small_table

import sharpmask  # noqa: F401  (registers the datasets)
from sharpmask.evaluation import evaluate_proposal_file


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a registered dataset")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--proposals", help="detectron2 proposal file (.pkl)")
    source.add_argument("--segm", help="COCO results with RLE masks (.json)")
    parser.add_argument("--output", help="folder for metrics, plots and proposal files")
    parser.add_argument("--max-proposals", type=int, default=1000)
    parser.add_argument("--seen-categories", nargs="*", default=[],
                        help="categories seen in training: also report seen/unseen recall")
    parser.add_argument("--label", help="the method's name in the plots")
    args = parser.parse_args()
    metrics = evaluate_proposal_file(
        args.dataset, box_file=args.proposals, segm_file=args.segm, output_dir=args.output,
        max_proposals=args.max_proposals, seen_categories=args.seen_categories,
        label=args.label)
    for task, values in metrics.items():
        print(f"{task} recall (%) on {args.dataset}:\n{create_small_table(values)}")


if __name__ == "__main__":
    main()
