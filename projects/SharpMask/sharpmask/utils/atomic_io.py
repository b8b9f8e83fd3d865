"""Atomic writes: a reader never sees a half-written results file, even after a crash."""
import contextlib
import json
import math
import os
import pickle
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
