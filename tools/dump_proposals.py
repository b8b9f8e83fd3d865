#!/usr/bin/env python
"""Run a proposal model over a dataset and write detectron2's precomputed-proposal file.

    python tools/dump_proposals.py --config-file configs/shapes/sharpmask_R18_shapes.yaml \
        --dataset shapes_val --output proposals/sharpmask_shapes_val.pkl [--masks] \
        [--num-gpus 2] [--images-per-shard 200] MODEL.WEIGHTS model_final.pth

The pickle holds `ids`, `boxes` (N x 4 XYXY per image), `objectness_logits` and `bbox_mode`,
with every image of the dataset present (empty arrays where there is no proposal: detectron2
raises KeyError on a missing id). With --masks, `<output>.segm.json` also holds the masks as
COCO RLE results. The dataset is cut into shards written to `<output>.shards/` as they finish;
processes (detectron2's `launch`) take shards in turn; a rerun skips finished shards, so an
interrupted run resumes. The merged files are written atomically by the first process.
"""
import argparse
import glob
import hashlib
import json
import os
import pickle
import sys
import time

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import launch
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from detectron2.utils import comm
from tqdm import tqdm

from sharpmask import add_sharpmask_config
from sharpmask.data.validation import CheckedDatasetMapper
from sharpmask.engine import check_config, check_weights_cover_model, merge_config
from sharpmask.engine.ddp import launch_environment
from sharpmask.evaluation.segment_proposal_evaluation import check_finite_proposals
from sharpmask.structures import encode_masks_as_rles
from sharpmask.utils.atomic_io import (atomic_write_json, atomic_write_pickle,
                                       remove_stale_temporaries)
from sharpmask.utils.coco_results import segment_results_text, write_json_list


def shard_path(output, index):
    return os.path.join(output + ".shards", f"shard_{index:05d}.pkl")


def run_shard(model, mapper, records, with_masks, bar=None):
    """Proposals of `records` -> {"ids", "boxes", "objectness_logits", "segm"}; "segm" holds
    each image's COCO results as JSON text (`segment_results_text`). `bar` (tqdm) advances
    per image."""
    shard = {"ids": [], "boxes": [], "objectness_logits": [], "segm": []}
    for record in records:
        with torch.no_grad():
            proposals = model([mapper(record)])[0]["proposals"].to("cpu")
        add_to_shard(shard, record["image_id"], proposals, with_masks)
        if bar is not None:
            bar.update(1)
    return shard


def add_to_shard(shard, image_id, proposals, with_masks):
    """One image's `proposals` (Instances on the CPU) -> its entries in `shard`."""
    check_finite_proposals(image_id, proposals.objectness_logits,
                           proposals.proposal_boxes.tensor)
    shard["ids"].append(image_id)
    shard["boxes"].append(proposals.proposal_boxes.tensor.numpy().astype(np.float32))
    logits = proposals.objectness_logits.numpy().astype(np.float32)
    shard["objectness_logits"].append(logits)
    if with_masks and proposals.has("proposal_masks"):
        rles = encode_masks_as_rles(proposals.proposal_masks)
        boxes = mask_util.toBbox(rles) if rles else np.zeros((0, 4))
        shard["segm"].append(segment_results_text(image_id, 1, rles, boxes, logits))


def load_config(args):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    merge_config(cfg, args.config_file, args.opts)
    cfg.MODEL.SHARPMASK.DEEPMASK_WEIGHTS = ""  # MODEL.WEIGHTS holds the whole network
    cfg.freeze()
    return cfg


def sha256(data=None, path=None):
    digest = hashlib.sha256(data or b"")
    if path:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def settings_manifest(args, cfg):
    """What finished shards depend on: the whole config, the weights' content (a checkpoint
    rewritten at the same path must not mix with shards of the old one), the shard layout."""
    weights = cfg.MODEL.WEIGHTS
    return {"config_sha256": sha256(cfg.dump().encode()),
            "weights_sha256": sha256(path=weights) if os.path.isfile(weights) else weights,
            "dataset": args.dataset, "images_per_shard": args.images_per_shard,
            "masks": args.masks, "shard_format": 2}


def main(args):
    cfg = load_config(args)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    check_config(cfg, datasets=[dataset])
    records = DatasetCatalog.get(dataset)
    shards = [records[i:i + args.images_per_shard]
              for i in range(0, len(records), args.images_per_shard)]
    mine = [i for i in range(len(shards)) if i % comm.get_world_size() == comm.get_rank()
            and not os.path.exists(shard_path(args.output, i))]
    model = build_model(cfg).eval()
    check_weights_cover_model(model, cfg.MODEL.WEIGHTS, cfg.MODEL.WEIGHTS_ALLOW_PARTIAL)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    mapper = CheckedDatasetMapper(cfg, is_train=False)
    if comm.is_main_process():
        done = len(shards) - sum(not os.path.exists(shard_path(args.output, i))
                                 for i in range(len(shards)))
        print(f"{dataset}: {len(records)} images in {len(shards)} shards, {done} already "
              f"done; {comm.get_world_size()} process(es)", flush=True)
    bar = tqdm(total=sum(len(shards[i]) for i in mine), unit="img",
               disable=not comm.is_main_process(), desc="proposals (this process)")
    start, count = time.perf_counter(), 0
    for index in mine:
        shard = run_shard(model, mapper, shards[index], args.masks, bar)
        atomic_write_pickle(shard, shard_path(args.output, index))
        count += len(shards[index])
    bar.close()
    timings = comm.gather((count, time.perf_counter() - start))  # synchronizes
    if comm.is_main_process():
        images, seconds = sum(c for c, _ in timings), sum(t for _, t in timings)
        if images:
            print(f"{images} images proposed in this run: {seconds / images:.3f} s per image "
                  f"in each of {len(timings)} process(es)", flush=True)
        merge(args.output, len(shards), args.masks, {r["image_id"] for r in records})


def load_shard(output, index):
    with open(shard_path(output, index), "rb") as f:
        return pickle.load(f)


def merge(output, num_shards, with_masks, expected_ids):
    """Shards -> the proposal pickle, then (--masks) the masks' JSON streamed shard by shard,
    so that memory holds one shard's masks at a time."""
    merged = {key: [] for key in ("ids", "boxes", "objectness_logits")}
    for index in range(num_shards):
        shard = load_shard(output, index)
        for key in merged:
            merged[key] += shard[key]
    missing = expected_ids - set(merged["ids"])
    if missing:
        raise RuntimeError(f"{len(missing)} images have no proposals entry, e.g. "
                           f"{sorted(missing)[:5]}; delete {output}.shards and rerun")
    merged["bbox_mode"] = BoxMode.XYXY_ABS
    atomic_write_pickle(merged, output)
    print(f"wrote {output}: {len(merged['ids'])} images, "
          f"{sum(len(b) for b in merged['boxes'])} proposals")
    if with_masks:
        write_json_list(output + ".segm.json", (text for index in range(num_shards)
                                                 for text in load_shard(output, index)["segm"]))
        print(f"wrote {output}.segm.json")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--dataset", help="registered dataset (default: DATASETS.TEST[0])")
    parser.add_argument("--output", required=True, help="the .pkl file to write")
    parser.add_argument("--masks", action="store_true", help="also write <output>.segm.json")
    parser.add_argument("--images-per-shard", type=int, default=200)
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    parser.add_argument("--dist-url", default="auto")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE)")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    args.output = os.path.abspath(args.output)
    os.makedirs(args.output + ".shards", exist_ok=True)
    # What a killed run left half-written (no process of ours writes yet).
    name = glob.escape(os.path.basename(args.output))
    remove_stale_temporaries(os.path.dirname(args.output), [name, name + ".segm.json"])
    remove_stale_temporaries(args.output + ".shards", ["shard_*.pkl", "manifest.json"])
    # Finished shards are only reused by a run with the same settings and weights.
    cfg = load_config(args)
    manifest = settings_manifest(args, cfg)
    manifest_path = os.path.join(args.output + ".shards", "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            previous = json.load(f)
        changed = [key for key in manifest if previous.get(key) != manifest[key]]
        if changed:
            sys.exit(f"error: {args.output}.shards holds shards of a run with other settings "
                     f"({', '.join(changed)} differ: the weights file's content, the config, "
                     "...); delete that folder or rerun with the same arguments and weights")
    else:
        atomic_write_json(manifest, manifest_path)
    with launch_environment(args.num_gpus, cfg.MODEL.DEVICE):
        launch(main, args.num_gpus, num_machines=args.num_machines,
               machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
