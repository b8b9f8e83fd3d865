#!/usr/bin/env python
"""Run the training tests (`pytest -m training`) over seeds, thread counts and CPU kernel paths,
and print, for each checked loss, its limit and the worst ratio measured.

A test's limit must hold on any CPU, so this is what sets it: the worst case here, plus a
margin. The kernel paths emulate other machines on this one: `native` is what torch picks
here; `baseline` forces ATen's non-vectorised kernels, oneDNN's SSE4.1 code and MKL's SSE4.2
code (other summation orders, as on another CPU generation).

Usage: python tools/test_margins.py [--seeds 0 1 2 3 4] [--threads 1 2]
                                    [--kernels native baseline] [--output FILE]
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KERNELS = {
    "native": {},
    "baseline": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                 "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


def run(seed, threads, kernels, log):
    env = dict(os.environ, SHARPMASK_TEST_SEED=str(seed), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), SHARPMASK_MARGIN_LOG=log, **KERNELS[kernels])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "training", "-p",
                           "no:cacheprovider"], cwd=REPO, env=env, capture_output=True,
                          text=True)
    return proc.returncode, proc.stdout.strip().splitlines()[-1:]


def table(rows):
    groups = collections.defaultdict(list)
    for row in rows:
        groups[(row["test"], row["key"])].append(row)
    lines = ["| test | loss | limit (last/first) | worst | median | margin | runs | worst run |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for (test, key), runs in sorted(groups.items()):
        ratios = sorted(r["ratio"] for r in runs)
        worst = max(runs, key=lambda r: r["ratio"])
        limit = runs[-1]["limit"]  # the test's current limit
        lines.append(
            f"| {test} | {key} | {limit:.2f} | {ratios[-1]:.3f} | {ratios[len(ratios) // 2]:.3f} "
            f"| {limit - ratios[-1]:.3f} | {len(runs)} | seed {worst['seed']}, "
            f"{worst['threads']} thread(s), {worst['kernels']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    parser.add_argument("--output", help="also write the table to this Markdown file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "margins.jsonl")
        failures = []
        for kernels in args.kernels:
            for threads in args.threads:
                for seed in args.seeds:
                    start = time.time()
                    code, summary = run(seed, threads, kernels, log)
                    print(f"seed {seed}, {threads} thread(s), {kernels}: {' '.join(summary)} "
                          f"({time.time() - start:.0f} s)", flush=True)
                    if code != 0:
                        failures.append((seed, threads, kernels))
        with open(log) as f:
            rows = [json.loads(line) for line in f]
    text = table(rows)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    if failures:
        sys.exit(f"training tests failed for (seed, threads, kernels): {failures}")


if __name__ == "__main__":
    main()
