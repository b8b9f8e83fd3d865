#!/usr/bin/env python
"""`make detect-demo` and `make refinemask-demo`: detectors on `shapes`, on a CPU.

    python tools/detection_demo.py proposals   # Fast R-CNN on each proposal source
    python tools/detection_demo.py refinemask  # Mask R-CNN's mask head vs RefineMask's

Both start from one Faster R-CNN R18-FPN trained on shapes_train
(configs/shapes/faster_rcnn_R18_FPN_shapes.yaml, trained once and reused) from the trunk that
DeepMask learned in `make demo-all`: it stands in for the ImageNet weights of a COCO detector.

`proposals`, the papers' experiment: every source (the Faster R-CNN's own RPN, the DeepMask,
SharpMask and InstanceFCN of `make demo-all`, Selective Search) writes its proposals for the
training images and shapes_val (tools/dump_proposals.py); one protocol then applies to all (box
NMS at 0.7, the top 1000 per image); per source and seed, a Fast R-CNN
(configs/shapes/fast_rcnn_R18_FPN_shapes_proposals.yaml: that backbone, fixed, and a new box
head) trains on them and is tested with the top 10 ... 1000 proposals (box AP on shapes_val),
beside the proposals' own box AR. Writes the tables and ap_vs_proposals.png.
`refinemask`: on the same fixed detector, the two mask heads train with the same schedule; mask
AP, AP75, the AP averaged over IoU 0.8-0.95 and Boundary AP (where mask boundaries decide the
match), with the detector's boxes and with the ground-truth boxes (the mask head alone).

Everything goes under one folder (default output/detect_demo); each stage's result is kept, so a
rerun continues where it stopped. The table is written to proposals.md / refinemask.md there.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from tqdm import tqdm

from sharpmask import add_sharpmask_config
from sharpmask.engine import Trainer
from sharpmask.engine.checkpoint import save_deepmask_trunk_as_fpn_bottom_up
from sharpmask.engine.progress import evaluate_with_progress, prepare_output, train_with_progress
from sharpmask.data.proposal_protocol import apply_protocol_to_proposal_file
from sharpmask.evaluation import (COCOEvaluatorWithBoundaryAP, ap_at_iou_thresholds,
                                  evaluate_proposal_file, predict_masks_for_ground_truth)
from sharpmask.evaluation.plots import plot_ap_vs_proposals
from sharpmask.evaluation.proposal_count_sweep import evaluate_at_proposal_counts
from sharpmask.utils.atomic_io import atomic_open, cached_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DETECTOR = "configs/shapes/faster_rcnn_R18_FPN_shapes.yaml"
FAST_RCNN = "configs/shapes/fast_rcnn_R18_FPN_shapes_proposals.yaml"
MASK_HEADS = {  # name -> (folder, config)
    "Mask R-CNN head": ("mask_head_maskrcnn",
                        "configs/shapes/mask_rcnn_R18_FPN_shapes_fixed_detector.yaml"),
    "RefineMask head": ("mask_head_refinemask",
                        "configs/shapes/mask_rcnn_R18_FPN_refinemask_shapes.yaml")}
PROPOSAL_NETWORKS = {"DeepMask": "configs/shapes/deepmask_R18_shapes.yaml",
                     "SharpMask": "configs/shapes/sharpmask_R18_shapes.yaml",
                     "InstanceFCN": "configs/shapes/instancefcn_R18_shapes.yaml"}
TRAIN, TEST = "shapes_train_200", "shapes_val"  # proposals: --train-dataset, --test-dataset
SELECTIVE_SEARCH = "configs/shapes/selective_search_shapes.yaml"
ONLINE_SHARPMASK = "configs/shapes/fast_rcnn_R18_FPN_shapes_sharpmask_online.yaml"
ONLINE = "SharpMask (online)"  # the SharpMask row's proposals computed inside the detector
SOURCES = ("RPN (detectron2)", "DeepMask", "SharpMask", "InstanceFCN", "Selective Search")
# The protocol every source's proposals go through before Fast R-CNN: box NMS at 0.7, the
# threshold detectron2's RPN applies to its own proposals (so the RPN row is the RPN as it
# ships) and Fast/Faster R-CNN's usual one; then the top 1000 per image, what the RPN keeps.
NMS_THRESHOLD = 0.7
KEPT = 1000
PROPOSAL_COUNTS = (10, 20, 50, 100, 200, 500, 1000)
MASK_RESULTS = "mask_results.json"  # with Boundary AP (results.json of older runs lack it)


def load_cfg(config_file, opts):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config_file))
    cfg.merge_from_list(opts)
    cfg.freeze()
    return cfg


def save_weights(state, path):
    with atomic_open(path, "wb") as f:
        torch.save({"model": state}, f)


def train_detector(output_dir, proposal_models):
    """The shared Faster R-CNN, started from DeepMask's trunk -> (its checkpoint, a checkpoint
    of its backbone only)."""
    trunk = os.path.join(output_dir, "deepmask_trunk_R18.pth")
    if not os.path.exists(trunk):
        save_deepmask_trunk_as_fpn_bottom_up(network_weights(proposal_models, "DeepMask"), trunk)
    cfg = load_cfg(DETECTOR, ["MODEL.WEIGHTS", trunk, "MODEL.WEIGHTS_ALLOW_PARTIAL", "True",
                              "OUTPUT_DIR", os.path.join(output_dir, "faster_rcnn")])
    final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    backbone = os.path.join(cfg.OUTPUT_DIR, "backbone_final.pth")
    if not os.path.exists(final):
        train_with_progress(cfg, "Faster R-CNN (shared detector)")
    if not os.path.exists(backbone):
        state = torch.load(final, map_location="cpu", weights_only=False)["model"]
        save_weights({k: v for k, v in state.items() if k.startswith("backbone.")}, backbone)
    return final, backbone


def network_weights(proposal_models, name):
    weights = os.path.join(proposal_models, name.lower(), "model_final.pth")
    if not os.path.exists(weights):
        sys.exit(f"error: {weights} does not exist. Train the proposal networks first with "
                 "`make demo-all`, or pass --proposal-models FOLDER holding deepmask/, "
                 "sharpmask/ and instancefcn/ with model_final.pth each")
    return weights


def dump_proposals(config_file, weights, dataset, path, opts=()):
    """tools/dump_proposals.py in its own process (it shards, resumes, writes atomically)."""
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(REPO, "tools", "dump_proposals.py"),
                        "--config-file", os.path.join(REPO, config_file), "--dataset", dataset,
                        "--output", path, "MODEL.WEIGHTS", weights, *opts], check=True)
    return path


def raw_proposal_files(output_dir, detector_weights, proposal_models, sources, datasets):
    """source -> {dataset: proposal file as the source writes it}."""
    configs = {"RPN (detectron2)": (DETECTOR, detector_weights,
                                    ["MODEL.META_ARCHITECTURE", "ProposalNetwork"]),
               "Selective Search": (SELECTIVE_SEARCH, "", [])}
    for name, config_file in PROPOSAL_NETWORKS.items():
        if name in sources:
            configs[name] = (config_file, network_weights(proposal_models, name),
                             fast_inference_opts())
    return {name: {dataset: dump_proposals(
        configs[name][0], configs[name][1], dataset,
        os.path.join(output_dir, "proposals", f"{slug(name)}_{dataset}.pkl"), configs[name][2])
        for dataset in datasets} for name in sources}


def fast_inference_opts():
    """bfloat16 autocast and channels-last for our networks' dumps where the CPU runs bfloat16
    natively (AVX-512 BF16, AMX: inference 2.0-2.9x faster in `make bench`, rankings equal up
    to bfloat16 rounding, tests/test_amp.py); float32 NCHW elsewhere (emulated is slower)."""
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return ["TEST.AMP.ENABLED", "True", "MODEL.CHANNELS_LAST", "True"] if native else []


def protocol_file(path):
    """The file with the protocol applied: box NMS at NMS_THRESHOLD, then the top KEPT."""
    out = path.replace(".pkl", f"_nms{NMS_THRESHOLD:g}_top{KEPT}.pkl")
    if not os.path.exists(out):
        apply_protocol_to_proposal_file(path, out, NMS_THRESHOLD, KEPT)
    return out


def slug(name):
    return {"Selective Search": "selective_search", ONLINE: "sharpmask_online"}.get(
        name, name.split()[0].lower())


def fast_rcnn_runs(output_dir, backbone, name, datasets, seeds, counts, extra_opts,
                   paths=None, online_weights=None):
    """{seed: {count: box metrics}}: a Fast R-CNN trained per seed on the proposals of
    datasets (train, test)[0], tested with the top `count` proposals of the other (every count
    for the first seed, the top 100 for the others: the spread of the main point). Proposals
    from the files `paths` ({dataset: file}), or with `online_weights` computed online by that
    SharpMask (ONLINE_SHARPMASK, the same protocol; the first seed only, tested at 100: its
    SharpMask runs on every training image at every step, ~4x a Fast R-CNN's time here)."""
    train, test = datasets
    config = FAST_RCNN if online_weights is None else ONLINE_SHARPMASK
    runs = {}
    for k, seed in enumerate(seeds if online_weights is None else seeds[:1]):
        opts = ["MODEL.WEIGHTS", backbone, "MODEL.WEIGHTS_ALLOW_PARTIAL", "True", "SEED", seed,
                "DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{test}',)",
                "OUTPUT_DIR", os.path.join(output_dir, f"fast_rcnn_{slug(name)}_seed{seed}"),
                *extra_opts]
        if online_weights is None:
            opts += ["DATASETS.PROPOSAL_FILES_TRAIN", f"('{paths[train]}',)",
                     "DATASETS.PROPOSAL_FILES_TEST", f"('{paths[test]}',)"]
            topk_key = "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST"
        else:
            opts += ["MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS", online_weights]
            topk_key = "MODEL.SEGMENT_PROPOSAL_GENERATOR.TOPK_TEST"
        cfg = load_cfg(config, opts)
        tested = counts if k == 0 and online_weights is None else [c for c in counts if c == 100]
        results = {count: os.path.join(cfg.OUTPUT_DIR, "inference", f"{test}_top{count}",
                                       "results.json") for count in tested}
        missing = [count for count in tested if not os.path.exists(results[count])]
        measured = {}  # count -> box metrics, for the counts not cached yet
        if missing:  # else everything is cached: no model to train or load
            model = train_with_progress(cfg, f"Fast R-CNN on {name} proposals, seed {seed}")
        if online_weights is not None:
            for count in missing:  # the generator's top k is set when it is built
                test_cfg = load_cfg(config, opts + [topk_key, count])
                test_model = Trainer.build_model(test_cfg)
                DetectionCheckpointer(test_model).load(os.path.join(cfg.OUTPUT_DIR,
                                                                    "model_final.pth"))
                measured[count] = evaluate_with_progress(
                    test_cfg, test_model, f"{name}, top {count}",
                    os.path.dirname(results[count]))["bbox"]
        elif missing:  # one pass over the test images for all counts
            evaluators = {count: Trainer.build_evaluator(cfg, test, os.path.dirname(
                results[count])) for count in missing}
            measured = {count: metrics["bbox"] for count, metrics in evaluate_at_proposal_counts(
                cfg, model, test, evaluators, f"evaluate {name}, seed {seed}, top {missing}"
            ).items()}
        runs[seed] = {count: cached_json(results[count], lambda count=count: measured[count])
                      for count in tested}
    return runs


def proposals_tables(results, seeds, counts):
    """Markdown: box AP against the number of proposals (first seed); AP, AP50, AP75 at 100
    and 1000, the top-100 AP over seeds and the proposals' box AR; the AR-AP correlation."""
    first = seeds[0]

    def ap(r, seed, count, metric="AP"):
        run = r["runs"][seed].get(count)
        return f"{run[metric]:.1f}" if run else ""

    head = "| proposals | " + " | ".join(f"AP@{c}" for c in counts) + " |"
    curve = [head, "|---|" + "---:|" * len(counts)]
    curve += [f"| {name} | " + " | ".join(ap(r, first, c) for c in counts) + " |"
              for name, r in results.items()]
    shown = [c for c in (100, 1000) if c in counts]
    columns = [f"box {m} (top {c})" for c in shown for m in ("AP", "AP50", "AP75")]
    columns += [f"box AP (top 100), {len(seeds)} seeds: mean (min-max)"] if 100 in counts else []
    columns += [f"proposal box AR@{c}" for c in (10, 100, 1000)]
    table = ["| proposals | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, r in results.items():
        cells = [ap(r, first, c, m) for c in shown for m in ("AP", "AP50", "AP75")]
        if 100 in counts:  # the online row has the first seed only
            aps = [r["runs"][s][100]["AP"] for s in seeds if s in r["runs"]]
            cells.append(f"{np.mean(aps):.1f} ({min(aps):.1f}-{max(aps):.1f})" if len(aps) > 1
                         else f"{aps[0]:.1f} (seed {seeds[0]})")
        cells += [f"{r['AR'][f'AR@{c}']:.1f}" for c in (10, 100, 1000)]
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(curve + [""] + table)
    offline = [r for name, r in results.items() if name != ONLINE]
    if 100 in counts and len(offline) > 2:
        ars = [r["AR"]["AR@100"] for r in offline]
        aps = [np.mean([r["runs"][s][100]["AP"] for s in seeds]) for r in offline]
        r = np.corrcoef(ars, aps)[0, 1]
        text += (f"\n\nAcross the {len(offline)} sources, Pearson's r between proposal box "
                 f"AR@100 and Fast R-CNN box AP at 100 proposals: {r:.2f}")
    return text


def proposal_units(sources, counts):
    """What `make detect-demo` trains, one unit per job: each source, and the online SharpMask
    row (tested at 100 proposals); the longest first, so that parallel jobs finish together."""
    units = list(sources) + ([ONLINE] if "SharpMask" in sources and 100 in counts else [])
    return sorted(units, key=lambda name: name not in (ONLINE, "Selective Search"))


def run_unit(name, output_dir, proposal_models, datasets, seeds, counts, extra_opts):
    """One unit of `proposal_units`, every stage cached in output_dir -> {"AR", "runs"} (the
    online row: {"runs"}, its proposals are the SharpMask row's)."""
    detector, backbone = train_detector(output_dir, proposal_models)
    if name == ONLINE:
        return {"runs": fast_rcnn_runs(
            output_dir, backbone, name, datasets, seeds, counts, extra_opts,
            online_weights=network_weights(proposal_models, "SharpMask"))}
    raw = raw_proposal_files(output_dir, detector, proposal_models, [name], datasets)[name]
    paths = {dataset: protocol_file(path) for dataset, path in raw.items()}
    test = datasets[1]
    recall = cached_json(paths[test] + ".recall.json",
                         lambda: evaluate_proposal_file(test, box_file=paths[test])["bbox"])
    return {"AR": recall, "runs": fast_rcnn_runs(output_dir, backbone, name, datasets, seeds,
                                                 counts, extra_opts, paths=paths)}


def run_units_in_parallel(units, jobs, output_dir, child_args):
    """Each unit in its own process of this script (`--only`), `jobs` at a time with the CPU
    cores shared out (OMP_NUM_THREADS); each writes its console output to logs/<unit>.log."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    os.makedirs(os.path.join(output_dir, "logs"), exist_ok=True)
    start = time.time()

    def run(name):
        log = os.path.join(output_dir, "logs", f"{slug(name)}.log")
        print(f"[{(time.time() - start) / 60:5.1f} min] started {name} (log: {log})", flush=True)
        with open(log, "a") as f:
            code = subprocess.run([sys.executable, os.path.abspath(__file__), "proposals",
                                   "--only", name, *child_args], stdout=f, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": str(threads)}).returncode
        print(f"[{(time.time() - start) / 60:5.1f} min] {'finished' if code == 0 else 'FAILED'} "
              f"{name}", flush=True)
        return name, code, log

    with ThreadPoolExecutor(jobs) as pool:
        failed = [(name, log) for name, code, log in pool.map(run, units) if code]
    if failed:
        sys.exit("error: " + "; ".join(f"{name} failed, see {log}" for name, log in failed)
                 + ". Rerun the same command: finished stages are kept.")


def run_proposals(output_dir, proposal_models, datasets, sources, seeds, counts, extra_opts,
                  jobs=1, child_args=()):
    """datasets: (train, test). -> the tables of `proposals_tables`."""
    train_detector(output_dir, proposal_models)  # once, before any parallel job needs it
    units = proposal_units(sources, counts)
    if jobs > 1 and len(units) > 1:
        run_units_in_parallel(units, min(jobs, len(units)), output_dir, child_args)
    results = {name: run_unit(name, output_dir, proposal_models, datasets, seeds, counts,
                              extra_opts) for name in units}  # read back when run in parallel
    if ONLINE in results:
        results[ONLINE]["AR"] = results["SharpMask"]["AR"]
    results = {name: results[name] for name in (*sources, ONLINE) if name in results}
    plot_ap_vs_proposals({name: {c: r["runs"][seeds[0]][c]["AP"] for c in counts}
                          for name, r in results.items() if name != ONLINE},
                         os.path.join(output_dir, "ap_vs_proposals.png"))
    return proposals_tables(results, seeds, counts)


def high_iou_ap(folder):
    """Mask AP over IoU 0.8-0.95 of the COCOEvaluator results written in `folder`."""
    with open(os.path.join(folder, "coco_instances_results.json")) as f:
        detections = json.load(f)
    return ap_at_iou_thresholds(MetadataCatalog.get(TEST).json_file, detections,
                                [r["image_id"] for r in DatasetCatalog.get(TEST)])


def masks_on_ground_truth_boxes(cfg, model, description, folder):
    """COCOEvaluator's mask AP and Boundary AP ({"segm", "boundary"}) of the masks `model`
    predicts for TEST's ground-truth boxes (images with only crowd regions have none and are
    left out)."""
    mapper = DatasetMapper(cfg, is_train=False)
    evaluator = COCOEvaluatorWithBoundaryAP(TEST, tasks=("segm",), distributed=False,
                                            output_dir=folder)
    evaluator.reset()
    model.eval()
    records = [r for r in DatasetCatalog.get(TEST)
               if any(not a.get("iscrowd", 0) for a in r["annotations"])]
    for record in tqdm(records, desc=f"masks of {description} on ground-truth boxes",
                       unit="img", dynamic_ncols=True):
        inputs = [mapper(record)]
        evaluator.process(inputs, predict_masks_for_ground_truth(model, inputs, [record]))
    return evaluator.evaluate()


def refinemask_stage_table(cfg, model, folder):
    """GT-box mask AP of the RefineMask head's output cut after each stage (28, 56 and the
    full 112 merge), the paper's per-stage view: does each refinement stage help here?"""
    from unittest import mock

    from sharpmask.modeling import refinemask

    rows = []
    for k, size in ((1, 28), (2, 56), (3, 112)):
        stage_folder = os.path.join(folder, f"stage_{size}")

        def evaluate(k=k, stage_folder=stage_folder):
            merge = refinemask.merge_stages
            with mock.patch.object(refinemask, "merge_stages",
                                   lambda logits, *args: merge(logits, *args)[:k + 1]):
                res = masks_on_ground_truth_boxes(cfg, model, f"RefineMask to {size}",
                                                  stage_folder)
            return {"segm": res["segm"], "boundary": res["boundary"],
                    "segm_AP80_95": high_iou_ap(stage_folder)}

        r = cached_json(os.path.join(stage_folder, MASK_RESULTS), evaluate)
        rows.append(f"| {size} x {size} | {r['segm']['AP']:.1f} | {r['segm']['AP75']:.1f} | "
                    f"{r['segm_AP80_95']:.1f} | {r['boundary']['AP']:.1f} |")
    return "\n".join(["| RefineMask output after stage | GT-box mask AP | AP75 | AP@[.8:.95] "
                      "| Boundary AP |", "|---|---:|---:|---:|---:|", *rows])


def run_refinemask(output_dir, proposal_models):
    detector, _ = train_detector(output_dir, proposal_models)
    results = {}
    for name, (folder_name, config_file) in MASK_HEADS.items():
        cfg = load_cfg(config_file, ["MODEL.WEIGHTS", detector,
                                     "OUTPUT_DIR", os.path.join(output_dir, folder_name)])
        model = train_with_progress(cfg, name)
        folder = os.path.join(cfg.OUTPUT_DIR, "inference", TEST)
        gt_folder = os.path.join(cfg.OUTPUT_DIR, "inference", f"{TEST}_ground_truth_boxes")

        def evaluate():
            res = evaluate_with_progress(cfg, model, name, folder)
            return {"segm": res["segm"], "bbox": res["bbox"], "boundary": res["boundary"],
                    "segm_AP80_95": high_iou_ap(folder)}

        def evaluate_on_ground_truth_boxes():
            res = masks_on_ground_truth_boxes(cfg, model, name, gt_folder)
            return {"segm": res["segm"], "boundary": res["boundary"],
                    "segm_AP80_95": high_iou_ap(gt_folder)}

        results[name] = {
            "detected": cached_json(os.path.join(folder, MASK_RESULTS), evaluate),
            "ground truth": cached_json(os.path.join(gt_folder, MASK_RESULTS),
                                   evaluate_on_ground_truth_boxes)}
        if name == "RefineMask head":
            stages = refinemask_stage_table(cfg, model, gt_folder)
    columns = [(boxes, metric, f"{label} {title}")
               for boxes, label in (("detected", "mask"), ("ground truth", "GT-box mask"))
               for metric, title in (("AP", "AP"), ("AP75", "AP75"), ("AP80_95", "AP@[.8:.95]"),
                                     ("boundary", "Boundary AP"))]

    def value(r, metric):
        if metric == "boundary":
            return r["boundary"]["AP"]
        return r["segm_AP80_95"] if metric == "AP80_95" else r["segm"][metric]

    head = ("| mask head | " + " | ".join(title for _, _, title in columns)
            + " | mask AP_s | mask AP_m | mask AP_l | box AP |")
    rows = [f"| {name} | " + " | ".join(f"{value(r[b], m):.1f}" for b, m, _ in columns)
            + " | " + " | ".join(f"{r['detected']['segm'][k]:.1f}" for k in ("APs", "APm", "APl"))
            + f" | {r['detected']['bbox']['AP']:.1f} |" for name, r in results.items()]
    return "\n".join([head, "|---|" + "---:|" * (len(columns) + 4), *rows, "", stages])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["proposals", "refinemask"])
    parser.add_argument("--output", default="output/detect_demo", help="folder for everything")
    parser.add_argument("--proposal-models", default="output/demo_all",
                        help="make demo-all's folder: deepmask/, sharpmask/, instancefcn/")
    parser.add_argument("--train-dataset", default=TRAIN,
                        help="proposals: the images Fast R-CNN trains on (their proposals are "
                             "dumped for every source)")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES,
                        help="proposals: the proposal sources compared")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43],
                        help="proposals: one Fast R-CNN per source and seed (the first seed is "
                             "tested at every count, the others at 100)")
    parser.add_argument("--counts", nargs="+", type=int, default=list(PROPOSAL_COUNTS),
                        help="proposals: numbers of proposals per image tested")
    parser.add_argument("--test-dataset", default=TEST, help="proposals: the test images")
    parser.add_argument("--fast-rcnn-opts", nargs="*", default=[],
                        help="proposals: KEY VALUE overrides of the Fast R-CNN config (e.g. "
                             "SOLVER.MAX_ITER 20 for a quick look)")
    parser.add_argument("--jobs", type=int, default=min(6, os.cpu_count() or 1),
                        help="proposals: sources run in parallel processes, the CPU cores "
                             "shared among them (default: one per core, at most 6)")
    parser.add_argument("--only", choices=[*SOURCES, ONLINE],
                        help="proposals: run this one source's stages and stop (what each "
                             "parallel job runs)")
    args = parser.parse_args()
    output_dir = prepare_output(args.output)
    start = time.time()
    datasets = (args.train_dataset, args.test_dataset)
    proposal_models = os.path.abspath(args.proposal_models)
    if args.only:
        run_unit(args.only, output_dir, proposal_models, datasets, args.seeds, args.counts,
                 args.fast_rcnn_opts)
        return
    if args.experiment == "proposals":
        child_args = ["--output", output_dir, "--proposal-models", proposal_models,
                      "--train-dataset", args.train_dataset, "--test-dataset", args.test_dataset,
                      "--seeds", *map(str, args.seeds), "--counts", *map(str, args.counts),
                      "--fast-rcnn-opts", *args.fast_rcnn_opts]
        text = run_proposals(output_dir, proposal_models, datasets, args.sources, args.seeds,
                             args.counts, args.fast_rcnn_opts, args.jobs, child_args)
        title = (f"Fast R-CNN R18-FPN box AP (%) on {args.test_dataset}, trained on each "
                 f"source's proposals of {args.train_dataset} (box NMS at {NMS_THRESHOLD:g}, "
                 f"top {KEPT}), tested with the top {', '.join(map(str, args.counts))}; "
                 f"seeds {args.seeds}")
        command = "make detect-demo"
    else:
        text = run_refinemask(output_dir, proposal_models)
        title = f"Mask heads on one fixed Faster R-CNN R18-FPN, mask AP (%) on {TEST} (200 images)"
        command = "make refinemask-demo"
    minutes = (time.time() - start) / 60
    path = os.path.join(output_dir, f"{args.experiment}.md")
    with atomic_open(path, "w") as f:
        f.write(f"{title}. `{command}`, {minutes:.1f} min in this run on this machine (stages "
                f"finished by an earlier run are reused, not redone)\n\n{text}\n")
    print(f"\n{title}:\n\n{text}\n\nDone in {minutes:.1f} min (stages finished by an earlier run "
          f"were reused). Table: {path}; logs: "
          f"{os.path.join(output_dir, 'log.txt')}")


if __name__ == "__main__":
    main()
