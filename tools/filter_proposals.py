#!/usr/bin/env python
"""Apply the comparison protocol to a proposal file: the same box NMS for every source, then
the top k per image (sharpmask.data.proposal_protocol).

    python tools/filter_proposals.py --nms 0.7 --top-k 1000 ss_shapes_val.pkl ss_nms07.pkl
"""
import argparse

from sharpmask.data.proposal_protocol import apply_protocol_to_proposal_file


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="detectron2 proposal file (.pkl)")
    parser.add_argument("destination", help="the file to write")
    parser.add_argument("--nms", type=float, required=True,
                        help="box IoU of the NMS (1: none)")
    parser.add_argument("--top-k", type=int, default=1000, help="proposals kept per image")
    args = parser.parse_args()
    counts = apply_protocol_to_proposal_file(args.source, args.destination, args.nms,
                                             args.top_k)
    print(f"wrote {args.destination}: {counts['images']} images, {counts['before']} -> "
          f"{counts['after']} proposals (box NMS at {args.nms}, top {args.top_k})")


if __name__ == "__main__":
    main()
