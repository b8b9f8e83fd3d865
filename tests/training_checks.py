"""Judging short training runs in a way that holds on any CPU.

A short optimisation trajectory is not a property of our code alone: MKL and oneDNN sum in
different orders on AVX2, AVX-512 and AMX machines and with different thread counts, and a
few dozen steps amplify those last-bit differences. So a training test (marked
`@pytest.mark.training`) takes its seed from `training_seed()` and judges the run with
`assert_falls`, whose limits were set from the worst case `tools/test_margins.py` measured over
seeds, thread counts and CPU kernel paths, with a margin. Each check appends what it measured
to the JSON-lines file named by SHARPMASK_MARGIN_LOG, which that tool reads.
"""
import json
import os

import torch


def training_seed():
    """The seed of a training test: SHARPMASK_TEST_SEED, 0 by default."""
    return int(os.environ.get("SHARPMASK_TEST_SEED", "0"))


def mean_over(history, key, steps):
    """Mean of `key` over the given step slice of a list of per-step loss dicts."""
    values = [h[key] for h in history[steps]]
    return sum(values) / len(values)


def assert_falls(test, history, key, at_most, window=3):
    """The mean of `key` over the last `window` steps is below `at_most` times its mean over
    the first `window` steps (a window, because some losses, e.g. on boundary bands that move
    with the prediction, are not monotone from step to step)."""
    first = mean_over(history, key, slice(0, window))
    last = mean_over(history, key, slice(-window, None))
    ratio = last / first
    log = os.environ.get("SHARPMASK_MARGIN_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({
                "test": test, "key": key, "ratio": ratio, "limit": at_most,
                "seed": training_seed(), "threads": torch.get_num_threads(),
                "kernels": torch.backends.cpu.get_cpu_capability()}) + "\n")
    assert ratio < at_most, (key, f"last/first = {ratio:.3f}", [round(h[key], 4) for h in history])
