"""Atomic writes: a reader never sees a half-written results file, even after a crash."""
import contextlib
import json
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
    with atomic_open(path, "w") as f:
        json.dump(obj, f, **kwargs)


def cached_json(path, compute):
    """compute() once: its JSON-serialisable result is kept at `path` (written atomically) and
    read back from there on later calls, so a rerun of a long demo skips finished stages."""
    if not os.path.exists(path):
        atomic_write_json(compute(), path)
    with open(path) as f:
        return json.load(f)


def atomic_write_pickle(obj, path):
    with atomic_open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
