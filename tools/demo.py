#!/usr/bin/env python
"""Draw the top proposals of a trained DeepMask, SharpMask or InstanceFCN on images.

    python tools/demo.py --config-file configs/shapes/sharpmask_R18_shapes.yaml \
        --input img1.jpg some/folder/ --output out/ [--top-k 20] [--json] \
        MODEL.WEIGHTS output/demo/sharpmask/model_final.pth

Writes out/<image name>.png (masks with outlines and scores, drawn with detectron2's
Visualizer) and, with --json, out/<image name>.json (COCO RLE masks, boxes, scores).
An unreadable image is reported and skipped; the exit status is then 1.
"""
import argparse
import os
import sys

import cv2
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from detectron2.utils.visualizer import Visualizer

from sharpmask import add_sharpmask_config
from sharpmask.data.validation import read_image_checked
from sharpmask.engine import check_config, merge_config
from sharpmask.utils.atomic_io import atomic_open, atomic_write_json

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def image_paths(inputs):
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(os.path.join(item, f) for f in os.listdir(item)
                            if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"--input {item}: no such file or folder")
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {inputs}")
    return paths


def load_model(args):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    merge_config(cfg, args.config_file, args.opts)
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("give the trained weights: MODEL.WEIGHTS path/to/model_final.pth")
    cfg.MODEL.SHARPMASK.DEEPMASK_WEIGHTS = ""  # the full checkpoint has everything
    cfg.freeze()
    check_config(cfg)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return cfg, model


def draw(image_rgb, proposals):
    masks = torch.cat(list(proposals.proposal_masks.iter_pasted())).numpy() \
        if len(proposals) else None
    scores = torch.sigmoid(proposals.objectness_logits).tolist()
    visualizer = Visualizer(image_rgb)
    return visualizer.overlay_instances(masks=masks, labels=[f"{s:.2f}" for s in scores],
                                        alpha=0.35).get_image()


def proposals_json(proposals):
    rles = proposals.proposal_masks.to_rles()
    boxes = BoxMode.convert(proposals.proposal_boxes.tensor.numpy(), BoxMode.XYXY_ABS,
                            BoxMode.XYWH_ABS)
    return [{"segmentation": {"size": r["size"], "counts": r["counts"].decode("ascii")},
             "bbox": [float(v) for v in box], "score": float(torch.sigmoid(logit)),
             "objectness_logit": float(logit)}
            for r, box, logit in zip(rles, boxes, proposals.objectness_logits)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="+", required=True, help="images and/or folders")
    parser.add_argument("--output", required=True, help="folder for the pictures")
    parser.add_argument("--top-k", type=int, default=20, help="proposals drawn per image")
    parser.add_argument("--json", action="store_true", help="also write proposals as JSON")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE)")
    args = parser.parse_args()
    try:
        paths = image_paths(args.input)
        cfg, model = load_model(args)
    except (FileNotFoundError, ValueError, KeyError) as e:
        sys.exit(f"error: {e.args[0] if e.args else e}")
    os.makedirs(args.output, exist_ok=True)
    failed = 0
    for path in paths:
        try:
            image = read_image_checked(path, cfg.INPUT.FORMAT)
        except OSError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        with torch.no_grad():
            proposals = model.propose(torch.as_tensor(image.transpose(2, 0, 1).copy()),
                                      top_k=args.top_k).to("cpu")
        rgb = image[:, :, ::-1] if cfg.INPUT.FORMAT == "BGR" else image
        stem = os.path.splitext(os.path.basename(path))[0]
        ok, png = cv2.imencode(".png", draw(rgb, proposals)[:, :, ::-1])
        with atomic_open(os.path.join(args.output, stem + ".png"), "wb") as f:
            f.write(png.tobytes())
        if args.json:
            atomic_write_json(proposals_json(proposals),
                              os.path.join(args.output, stem + ".json"))
        print(f"{path}: {len(proposals)} proposals -> {os.path.join(args.output, stem)}.png")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
