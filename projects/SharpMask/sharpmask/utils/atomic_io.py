"""Atomic writes: a reader never sees a half-written results file, even after a crash."""
import contextlib
import glob
import json
import math
import os
import pickle
import shutil
import tempfile


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """Open a temporary file beside `path`; on success fsync it and rename it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results files follow the umask
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_json(obj, path, **kwargs):
    """Strict JSON (no NaN or Infinity tokens, which strict parsers reject): a non-finite
    number raises ValueError before the file is replaced. Use `nan_to_none` first where a
    missing value is legitimate."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, allow_nan=False, **kwargs)


def nan_to_none(obj):
    """`obj` with every non-finite float (e.g. the recall of a size range without objects)
    replaced by None, which JSON writes as null."""
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def cached_json(path, compute):
    """compute() once: its JSON-serialisable result (metrics) is kept at `path` (written
    atomically, strict JSON: a NaN, a metric without objects to measure, is stored as null and
    read back as NaN) and read back from there on later calls, so a rerun of a long demo skips
    finished stages."""
    if not os.path.exists(path):
        atomic_write_json(nan_to_none(compute()), path)
    with open(path) as f:
        return _none_to_nan(json.load(f))


def _none_to_nan(obj):
    if isinstance(obj, dict):
        return {k: _none_to_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_none_to_nan(v) for v in obj]
    return float("nan") if obj is None else obj


def atomic_write_pickle(obj, path):
    with atomic_open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def remove_stale_temporaries(folder, patterns):
    """Remove the temporary files that `atomic_open` left beside the files `patterns` (glob
    patterns of names; `glob.escape` a literal one) in `folder` when its process was killed
    (SIGKILL skips the clean-up): `.<name>.<random>`. Only while nothing writes there."""
    for pattern in patterns:
        for stale in glob.glob(os.path.join(glob.escape(folder), "." + pattern + ".*")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(stale)


@contextlib.contextmanager
def output_set(folder, manifest, names, **info):
    """Write one set of result files into `folder` as a unit. The body writes into the staging
    folder it is given; once it returns, the previous set's `manifest` is removed, the new files
    are moved into place (files of `names` the new set lacks are removed: no mixing of two
    runs), and the new manifest, listing the files with their sizes and `info`, is written
    last. A run killed while writing leaves the previous set as it was (its staging folder and
    stale temporaries are removed by the next run); only a kill during the moves leaves files
    without a manifest, i.e. a set marked incomplete. Readers check it with `read_output_set`."""
    os.makedirs(folder, exist_ok=True)
    for stale in glob.glob(os.path.join(glob.escape(folder), f".{manifest}.staging-*")):
        shutil.rmtree(stale, ignore_errors=True)
    remove_stale_temporaries(folder, [glob.escape(n) for n in (*names, manifest)])
    staging = tempfile.mkdtemp(dir=folder, prefix=f".{manifest}.staging-")
    try:
        yield staging
        written = sorted(os.listdir(staging))
        unexpected = set(written) - set(names)
        if unexpected:
            raise ValueError(f"output_set {manifest}: {sorted(unexpected)} not among {names}")
        manifest_path = os.path.join(folder, manifest)
        with contextlib.suppress(FileNotFoundError):
            os.remove(manifest_path)
        for name in set(names) - set(written):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
        sizes = {}
        for name in written:
            sizes[name] = os.path.getsize(os.path.join(staging, name))
            os.replace(os.path.join(staging, name), os.path.join(folder, name))
        atomic_write_json({"files": sizes, **info}, manifest_path, indent=1)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_output_set(folder, manifest):
    """The manifest of the complete result set in `folder`; ValueError naming what is wrong
    when the set is incomplete (no manifest: a run was killed while moving its files, or none
    finished) or a listed file is missing or of another size."""
    path = os.path.join(folder, manifest)
    if not os.path.isfile(path):
        raise ValueError(f"{folder} holds no complete result set ({manifest} is absent: the run "
                         "that wrote there did not finish); rerun it")
    with open(path) as f:
        info = json.load(f)
    for name, size in info["files"].items():
        file = os.path.join(folder, name)
        if not os.path.isfile(file) or os.path.getsize(file) != size:
            raise ValueError(f"{file} is missing or not the file {manifest} lists ({size} "
                             "bytes); rerun the evaluation")
    return info
