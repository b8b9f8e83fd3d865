#!/usr/bin/env python
"""Install detectron2 into the running Python environment when it is not importable.

detectron2 is not on PyPI and its repository cannot be reached from our machines. PyPI's
``sal-detectron2==0.7.2`` wheel carries detectron2's Python sources (upstream commit a59f0563,
April 2024, plus two trivial changes) together with a ``_C`` extension built for CPython 3.10
only and an unrelated top-level ``tools`` package. This script:

1. keeps an existing detectron2 (for example an official source build with CUDA ops) untouched;
2. downloads that wheel with pip, pinned by its sha256;
3. repacks only the pure-Python ``detectron2/`` package (no ``_C*.so``, no ``tools/``) into a
   wheel named ``detectron2`` with our own dependency list (the original pins ``numpy<2``,
   which upstream detectron2 does not), and installs it with pip so that ``pip show detectron2``,
   ``pip check``, ``pip uninstall`` and ``importlib.metadata.version("detectron2")`` all work.

Without ``_C`` one loses deformable convolution, rotated boxes and the C++ COCOeval; this
project uses none of them (ROIAlign and NMS come from torchvision).

Usage: python tools/install_detectron2.py [--force] [--constraint FILE]
"""
import argparse
import base64
import hashlib
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SOURCE_REQUIREMENT = "sal-detectron2==0.7.2"
SOURCE_WHEEL = "sal_detectron2-0.7.2-cp310-none-any.whl"
SOURCE_SHA256 = "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
VERSION = "0.7.2"  # equal to detectron2.__version__ inside the wheel
# detectron2's own install_requires at that commit, minus the numpy<2 pin of the repackager.
REQUIRES = [
    "Pillow>=7.1", "matplotlib", "pycocotools>=2.0.2", "termcolor>=1.1", "yacs>=0.1.8",
    "tabulate", "cloudpickle", "tqdm>4.29.0", "tensorboard", "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.11", "omegaconf>=2.1,<2.4", "hydra-core>=1.1", "black", "packaging",
]


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_source_wheel(dest):
    """pip-download the cp310 wheel (pip filters by interpreter, so ask for 3.10 explicitly)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.10", "--dest", str(dest), SOURCE_REQUIREMENT],
        check=True,
    )
    wheel = Path(dest) / SOURCE_WHEEL
    actual = sha256(wheel)
    if actual != SOURCE_SHA256:
        raise SystemExit(
            f"{wheel.name}: sha256 {actual} differs from the pinned {SOURCE_SHA256}; "
            "refusing to install a wheel whose content changed."
        )
    return wheel


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def repack(source, dest_dir):
    """Write detectron2-VERSION-py3-none-any.whl holding only the pure-Python package."""
    out = Path(dest_dir) / f"detectron2-{VERSION}-py3-none-any.whl"
    dist_info = f"detectron2-{VERSION}.dist-info"
    records = []
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            name = item.filename
            if not name.startswith("detectron2/") or name.endswith(".so"):
                continue  # drops tools/, the original dist-info and the cp310 _C extension
            data = zin.read(item)
            zout.writestr(name, data)
            records.append(_record_line(name, data))
        license_text = zin.read("sal_detectron2-0.7.2.dist-info/LICENSE")
        metadata = "\n".join(
            ["Metadata-Version: 2.1", "Name: detectron2", f"Version: {VERSION}",
             "Summary: detectron2 (pure-Python part of the sal-detectron2 0.7.2 wheel, "
             "upstream commit a59f0563), repacked without its CUDA/C++ extension",
             "Home-page: https://github.com/facebookresearch/detectron2",
             "License: Apache-2.0", "Requires-Python: >=3.8"]
            + [f"Requires-Dist: {r}" for r in REQUIRES]
        ) + "\n"
        wheel_meta = ("Wheel-Version: 1.0\nGenerator: sharpmask-install-detectron2\n"
                      "Root-Is-Purelib: true\nTag: py3-none-any\n")
        for name, text in [("METADATA", metadata), ("WHEEL", wheel_meta),
                           ("top_level.txt", "detectron2\n")]:
            data = text.encode()
            zout.writestr(f"{dist_info}/{name}", data)
            records.append(_record_line(f"{dist_info}/{name}", data))
        zout.writestr(f"{dist_info}/LICENSE", license_text)
        records.append(_record_line(f"{dist_info}/LICENSE", license_text))
        records.append(f"{dist_info}/RECORD,,")
        zout.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if importable")
    parser.add_argument("--constraint", help="pip constraints file for detectron2's dependencies "
                        "(make install passes requirements/lock.txt)")
    args = parser.parse_args()
    if importlib.util.find_spec("detectron2") is not None and not args.force:
        print("detectron2 is already importable; keeping it.")
        return
    with tempfile.TemporaryDirectory() as tmp:
        wheel = repack(download_source_wheel(tmp), tmp)
        constraint = ["-c", args.constraint] if args.constraint else []
        subprocess.run([sys.executable, "-m", "pip", "install", *constraint, str(wheel)],
                       check=True)
    print(f"installed detectron2 {VERSION} (pure Python, no _C extension)")


if __name__ == "__main__":
    main()
