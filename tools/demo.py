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
import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from detectron2.utils.colormap import random_color

from sharpmask import add_sharpmask_config
from sharpmask.data.validation import read_image_checked
from sharpmask.engine import check_config, check_weights_cover_model, merge_config
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
    return list(dict.fromkeys(os.path.abspath(p) for p in paths))  # each file once


def output_names(paths):
    """A distinct output name per input: its stem, or, where stems collide (one.png and one.jpg,
    or one name in two folders), its path from the colliding files' common folder with the
    extension kept ("a__one_png")."""
    by_stem = {}
    for path in paths:
        by_stem.setdefault(os.path.splitext(os.path.basename(path))[0], []).append(path)
    names = {}
    for stem, group in by_stem.items():
        if len(group) == 1:
            names[group[0]] = stem
            continue
        common = os.path.commonpath([os.path.dirname(p) for p in group])
        for path in group:
            names[path] = os.path.relpath(path, common).replace(os.sep, "__").replace(".", "_")
    return [names[p] for p in paths]


def load_model(args):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    merge_config(cfg, args.config_file, args.opts)
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("give the trained weights: MODEL.WEIGHTS path/to/model_final.pth")
    cfg.MODEL.SHARPMASK.DEEPMASK_WEIGHTS = ""  # the full checkpoint has everything
    cfg.freeze()
    check_config(cfg, datasets=[])  # the demo reads no dataset
    model = build_model(cfg).eval()
    check_weights_cover_model(model, cfg.MODEL.WEIGHTS, cfg.MODEL.WEIGHTS_ALLOW_PARTIAL)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return cfg, model


def draw(image_rgb, proposals, chunk_size=20, alpha=0.35):
    """The proposals' masks (blended, outlined) and scores over the image, best drawn last.
    Masks are pasted `chunk_size` at a time and blended into one image, so memory does not
    grow with their number (1000 full-size masks of a 6000x4000 photo are 24 GB at once, and
    matplotlib keeps an RGBA layer per mask with holes)."""
    out = image_rgb.astype(np.float32)
    scores = torch.sigmoid(proposals.objectness_logits).tolist()
    outlines, index = [], 0
    for chunk in proposals.proposal_masks.iter_pasted(chunk_size):
        for mask in chunk.numpy():
            color = random_color(rgb=True, maximum=255)
            out[mask] = out[mask] * (1 - alpha) + color * alpha
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            outlines.append((contours, color, scores[index]))
            index += 1
    out = np.ascontiguousarray(out.round().clip(0, 255).astype(np.uint8))
    scale = max(1.0, max(out.shape[:2]) / 1000)  # line and text size
    width = max(1, round(scale))
    for contours, color, score in reversed(outlines):  # the best on top
        if not contours:
            continue
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), width, cv2.LINE_AA)
        x, y, _, _ = cv2.boundingRect(np.concatenate(contours))
        for ink, thickness in (((0, 0, 0), 3 * width), ((255, 255, 255), width)):
            cv2.putText(out, f"{score:.2f}", (x + 2, y + round(14 * scale)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, ink, thickness, cv2.LINE_AA)
    return out


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
    for path, name in zip(paths, output_names(paths)):
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
        ok, png = cv2.imencode(".png", draw(rgb, proposals)[:, :, ::-1])
        with atomic_open(os.path.join(args.output, name + ".png"), "wb") as f:
            f.write(png.tobytes())
        if args.json:
            atomic_write_json(proposals_json(proposals),
                              os.path.join(args.output, name + ".json"))
        print(f"{path}: {len(proposals)} proposals -> {os.path.join(args.output, name)}.png")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
