#!/usr/bin/env python
"""`make scale-bench`: memory, time and file sizes at COCO scale, on the synthetic COCO-size
set (tools/make_coco_scale_dataset.py; written first if missing), printed as a table.

    python tools/scale_benchmark.py [--parts data eval dump] [--batches 2000] [--workers 4]
        [--eval-runs 1:1000 2:5000] [--dump-images 5000] [--output output/scale_benchmark.md]

- data: the training loaders of DeepMask/SharpMask (the centred-patch stream; SharpMask's is
  the same code with mask batches only) and InstanceFCN (detectron2's loader with our mapper),
  on `coco_scale_train` (82,783 records), with the COCO configs' batch sizes: start-up time and
  memory of the main process, then each worker's memory (RSS, and USS: its private pages,
  which grow when it copies shared pages it touches) after the first 10 batches and after
  `--batches`, and the throughput per worker.
- eval: `SegmentProposalEvaluator` on the first images of `coco_scale_val` with 1000
  synthetic proposals per image (soft 56x56 masks in windows of DeepMask's 7 sizes), one run
  per `--eval-runs` PROCESSES:IMAGES (default: 1 process on 1000 images, for the time per
  image and the memory per image; 2 processes on all of val5k, so that the whole command
  stays under an hour on a 2-core CPU): time per image, peak memory of the main process, the
  files written.
- dump: `tools/dump_proposals.py --masks` at val5k size: its shards (200 images each) as the
  tool writes them, from the same synthetic proposals (those of 50 images encoded, and
  re-used under the ids of the others), then its merge in a fresh process: time,
  peak memory, the files written.

Memory is read from /proc (Linux). Everything runs on the CPU; the models are not involved.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.engine import launch
from detectron2.utils import comm

from sharpmask import add_sharpmask_config
from sharpmask.data.build import build_patch_train_loader
from sharpmask.data.coco_scale import coco_scale_paths, register_coco_scale
from sharpmask.data.instancefcn_mapper import InstanceFCNDatasetMapper
from sharpmask.engine.ddp import launch_environment
from sharpmask.evaluation import SegmentProposalEvaluator
from sharpmask.structures import WindowedMasks
from sharpmask.utils.atomic_io import atomic_open, atomic_write_pickle
from dump_proposals import add_to_shard, merge, shard_path  # tools/, this script's folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADERS = {"DeepMask/SharpMask patches": "configs/deepmask_R50.yaml",
           "InstanceFCN images": "configs/instancefcn_R50.yaml"}
MB = 2 ** 20
DUMP_IMAGES_PER_SHARD = 200  # tools/dump_proposals.py's default


def memory(pid="self"):
    """{"rss", "uss"} in MB from /proc/<pid>/smaps_rollup (USS: private clean + dirty)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return {"rss": fields["Rss"] / MB,
            "uss": (fields["Private_Clean"] + fields["Private_Dirty"]) / MB}


def peak_rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def worker_pids():
    pids = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return sorted(pids)


def loader_cfg(config_file, workers):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config_file))
    cfg.DATASETS.TRAIN = ("coco_scale_train",)
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SEED = 0
    return cfg


def measure_loader(name, config_file, batches, workers):
    """One training loader on coco_scale_train: start-up, memory, throughput."""
    cfg = loader_cfg(config_file, workers)
    start = time.perf_counter()
    if "InstanceFCN" in name:
        loader = build_detection_train_loader(cfg, mapper=InstanceFCNDatasetMapper(cfg))
    else:
        loader = build_patch_train_loader(cfg)
    built = time.perf_counter() - start
    main_after_build = memory()
    it = iter(loader)
    for _ in range(10):
        next(it)
    startup = time.perf_counter() - start
    pids = worker_pids()
    early = [memory(p) for p in pids]
    t0 = time.perf_counter()
    for _ in range(batches - 10):
        next(it)
    elapsed = time.perf_counter() - t0
    late = [memory(p) for p in pids]
    per_batch = cfg.SOLVER.IMS_PER_BATCH
    row = {"loader": name, "build_s": built, "first_10_batches_s": startup,
           "main_rss_mb": main_after_build["rss"], "main_uss_mb": main_after_build["uss"],
           "workers": len(pids),
           "worker_rss_10_mb": [m["rss"] for m in early],
           "worker_rss_end_mb": [m["rss"] for m in late],
           "worker_uss_10_mb": [m["uss"] for m in early],
           "worker_uss_end_mb": [m["uss"] for m in late],
           "batches": batches, "batch": per_batch,
           "items_per_s_per_worker": (batches - 10) * per_batch / elapsed / max(len(pids), 1)}
    del it, loader
    return row


def synthetic_proposals(rng, height, width, count=1000, size=56):
    """`count` DeepMask-like proposals: soft elliptic blobs (56 x 56) in square windows of the
    sizes DeepMask's scales give (its 160 px window at scales 2^-2 .. 2^1: 80 .. 640 px)."""
    yy, xx = np.mgrid[:size, :size] / (size - 1) * 2 - 1
    sides = 160 * 2.0 ** (-rng.integers(-4, 3, count) / 2)
    centres = rng.uniform(0, 1, (count, 2)) * (width, height)
    radius = rng.uniform(0.3, 0.9, (count, 1, 1))
    angle = rng.uniform(0, np.pi, (count, 1, 1))
    u = xx[None] * np.cos(angle) + yy[None] * np.sin(angle)
    v = -xx[None] * np.sin(angle) + yy[None] * np.cos(angle)
    masks = 1 / (1 + np.exp(8 * ((u / radius) ** 2 + (v / (radius * 0.7)) ** 2 - 1)))
    windows = np.concatenate([centres - sides[:, None] / 2, centres + sides[:, None] / 2], 1)
    return (WindowedMasks(torch.from_numpy(masks.astype(np.float32)),
                          torch.from_numpy(windows), (height, width)),
            torch.from_numpy(rng.normal(size=count).astype(np.float32)))


def _evaluate(records, output_dir, result_file):
    from detectron2.structures import Instances

    rng = np.random.default_rng(comm.get_rank())
    evaluator = SegmentProposalEvaluator("coco_scale_val", output_dir,
                                         distributed=comm.get_world_size() > 1)
    evaluator.reset()
    before = memory()["rss"]
    start = time.perf_counter()
    for record in records[comm.get_rank()::comm.get_world_size()]:
        masks, scores = synthetic_proposals(rng, record["height"], record["width"])
        proposals = Instances((record["height"], record["width"]), proposal_masks=masks,
                              objectness_logits=scores)
        evaluator.process([{"image_id": record["image_id"]}], [{"proposals": proposals}])
    processed = time.perf_counter() - start
    metrics = evaluator.evaluate()
    total = time.perf_counter() - start
    if comm.is_main_process():
        sizes = {name: os.path.getsize(os.path.join(output_dir, name)) / MB
                 for name in ("segment_proposals.json", "box_proposals.pkl")}
        with open(result_file, "w") as f:
            json.dump({"process_s": processed, "total_s": total, "rss_before_mb": before,
                       "peak_rss_mb": peak_rss_mb(), "files_mb": sizes,
                       "AR@100": metrics["segm"]["AR@100"]}, f)


def val_records(num_images):
    """The first `num_images` of coco_scale_val by id: just what the evaluation loop needs."""
    records = sorted(DatasetCatalog.get("coco_scale_val"), key=lambda r: r["image_id"])
    return [{k: r[k] for k in ("image_id", "height", "width")} for r in records[:num_images]]


def measure_eval(num_images, processes):
    with tempfile.TemporaryDirectory() as out:
        result = os.path.join(out, "result.json")
        if processes == 1:
            # a fresh process, so that its peak memory is the evaluation's alone
            subprocess.run([sys.executable, __file__, "--eval-worker", out, str(num_images)],
                           check=True)
        else:
            with launch_environment(processes, "cpu"):
                launch(_evaluate, processes, dist_url="auto",
                       args=(val_records(num_images), os.path.join(out, "eval"), result))
        with open(result) as f:
            row = json.load(f)
    row.update(images=num_images, processes=processes,
               s_per_image=row["total_s"] / num_images)
    return row


def dump_shards(num_images):
    return -(-num_images // DUMP_IMAGES_PER_SHARD)


def write_dump_shards(records, output, encoded=50):
    """The shards `tools/dump_proposals.py --masks` writes for `records`, from synthetic
    proposals: those of the first `encoded` images are encoded as the tool does
    (`add_to_shard`), and every shard repeats them in turn under its own image ids (the
    encoding's cost is measured by the eval part). Returns the seconds per encoded image."""
    from detectron2.structures import Boxes, Instances

    rng = np.random.default_rng(0)
    base = {"ids": [], "boxes": [], "objectness_logits": [], "segm": []}
    start = time.perf_counter()
    for record in records[:encoded]:
        masks, scores = synthetic_proposals(rng, record["height"], record["width"])
        proposals = Instances((record["height"], record["width"]), proposal_masks=masks,
                              objectness_logits=scores, proposal_boxes=Boxes(masks.windows))
        add_to_shard(base, record["image_id"], proposals, with_masks=True)
    seconds = (time.perf_counter() - start) / len(base["ids"])
    for index in range(dump_shards(len(records))):
        first = index * DUMP_IMAGES_PER_SHARD
        ids = [r["image_id"] for r in records[first:first + DUMP_IMAGES_PER_SHARD]]
        which = [i % len(base["ids"]) for i in range(len(ids))]
        # copies: pickle would write a repeated array once
        shard = {"ids": ids, "boxes": [base["boxes"][i].copy() for i in which],
                 "objectness_logits": [base["objectness_logits"][i].copy() for i in which],
                 "segm": [base["segm"][i].replace(f'"image_id": {base["ids"][i]},',
                                                  f'"image_id": {image_id},')
                          for i, image_id in zip(which, ids)]}
        atomic_write_pickle(shard, shard_path(output, index))
    return seconds


def merge_worker(output, num_images, result_file):
    records = val_records(int(num_images))
    start = time.perf_counter()
    merge(output, dump_shards(len(records)), True, {r["image_id"] for r in records})
    with open(result_file, "w") as f:
        json.dump({"merge_s": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}, f)


def measure_dump(num_images):
    """`tools/dump_proposals.py --masks` at `num_images`: a shard's time per image, then the
    merge (in a fresh process, so that its peak memory is the merge's): time, memory, files."""
    with tempfile.TemporaryDirectory() as out:
        output = os.path.join(out, "proposals.pkl")
        os.makedirs(output + ".shards")
        encode_s = write_dump_shards(val_records(num_images), output)
        result = os.path.join(out, "merge.json")
        subprocess.run([sys.executable, __file__, "--merge-worker", output, str(num_images),
                        result], check=True)
        with open(result) as f:
            row = json.load(f)
        shard_mb = os.path.getsize(shard_path(output, 0)) / MB
        row.update(images=num_images, shard_s_per_image=encode_s, shard_mb=shard_mb,
                   pkl_mb=os.path.getsize(output) / MB,
                   segm_mb=os.path.getsize(output + ".segm.json") / MB)
    return row


def format_tables(data_rows, eval_rows, dump_row=None):
    lines = []
    if data_rows:
        lines += ["| loader | start-up (build; +10 batches) | main RSS / USS after build | "
                  "worker RSS after 10 -> N batches | worker USS after 10 -> N batches | "
                  "items/s per worker |", "|---|---|---|---|---|---:|"]
        for r in data_rows:
            rss = ", ".join(f"{a:.0f}->{b:.0f}" for a, b in
                            zip(r["worker_rss_10_mb"], r["worker_rss_end_mb"]))
            uss = ", ".join(f"{a:.0f}->{b:.0f}" for a, b in
                            zip(r["worker_uss_10_mb"], r["worker_uss_end_mb"]))
            lines.append(f"| {r['loader']} ({r['batch']}/batch, N = {r['batches']}) | "
                         f"{r['build_s']:.0f} s; {r['first_10_batches_s']:.0f} s | "
                         f"{r['main_rss_mb']:.0f} / {r['main_uss_mb']:.0f} MB | {rss} MB | "
                         f"{uss} MB | {r['items_per_s_per_worker']:.1f} |")
    if eval_rows:
        lines += ["", "| evaluation | images x proposals | s per image | main process RSS "
                  "before -> peak | segment_proposals.json | box_proposals.pkl |",
                  "|---|---|---:|---|---:|---:|"]
        for r in eval_rows:
            files = r["files_mb"]
            lines.append(f"| {r['processes']} process(es) | {r['images']} x 1000 | "
                         f"{r['s_per_image']:.3f} | {r['rss_before_mb']:.0f} -> "
                         f"{r['peak_rss_mb']:.0f} MB | {files['segment_proposals.json']:.0f} MB | "
                         f"{files['box_proposals.pkl']:.0f} MB |")
    if dump_row:
        r = dump_row
        lines += ["", "| tools/dump_proposals.py --masks | images x proposals | "
                  "s per image (encoding) | one shard file | merge: time, peak RSS | "
                  "proposals .pkl | .segm.json |",
                  "|---|---|---:|---:|---|---:|---:|",
                  f"| 1 process, {DUMP_IMAGES_PER_SHARD} images per shard | {r['images']} x 1000 | "
                  f"{r['shard_s_per_image']:.3f} | {r['shard_mb']:.0f} MB | "
                  f"{r['merge_s']:.1f} s, {r['peak_rss_mb']:.0f} MB | {r['pkl_mb']:.0f} MB | "
                  f"{r['segm_mb']:.0f} MB |"]
    return "\n".join(lines)


def eval_run(text):
    """"PROCESSES:IMAGES" -> (processes, images)."""
    try:
        processes, images = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PROCESSES:IMAGES, e.g. 2:5000")
    return processes, images


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["data", "eval", "dump"],
                        choices=["data", "eval", "dump"])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--eval-runs", nargs="+", default=[(1, 1000), (2, 5000)],
                        type=eval_run, metavar="PROCESSES:IMAGES")
    parser.add_argument("--output", default="output/scale_benchmark.md")
    parser.add_argument("--dump-images", type=int, default=5000)
    parser.add_argument("--eval-worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--merge-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    start = time.perf_counter()
    register_coco_scale()
    if args.eval_worker:
        out, num_images = args.eval_worker
        _evaluate(val_records(int(num_images)), os.path.join(out, "eval"),
                  os.path.join(out, "result.json"))
        return
    if args.merge_worker:
        merge_worker(*args.merge_worker)
        return
    if not os.path.exists(coco_scale_paths()["train_json"]):
        subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_coco_scale_dataset.py")],
                       check=True)
    data_rows, eval_rows = [], []
    if "data" in args.parts:
        for name, config_file in LOADERS.items():
            data_rows.append(measure_loader(name, config_file, args.batches, args.workers))
            print(format_tables(data_rows[-1:], []), flush=True)
    if "eval" in args.parts:
        for processes, num_images in args.eval_runs:
            eval_rows.append(measure_eval(num_images, processes))
            print(format_tables([], eval_rows[-1:]), flush=True)
    dump_row = measure_dump(args.dump_images) if "dump" in args.parts else None
    table = format_tables(data_rows, eval_rows, dump_row)
    table += f"\n\n(`{' '.join(sys.argv)}`: {(time.perf_counter() - start) / 60:.0f} min)"
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with atomic_open(args.output, "w") as f:
        f.write(table + "\n")
    with atomic_open(os.path.splitext(args.output)[0] + ".json", "w") as f:
        json.dump({"data": data_rows, "eval": eval_rows, "dump": dump_row}, f, indent=1)


if __name__ == "__main__":
    main()
