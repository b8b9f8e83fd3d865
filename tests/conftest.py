import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
# Generated datasets live in the repo's git-ignored ./datasets, whatever the working directory.
os.environ.setdefault("SHARPMASK_DATASETS", str(REPO / "datasets"))

import pytest  # noqa: E402

import sharpmask  # noqa: E402,F401  (registers the datasets)


@pytest.fixture(scope="session")
def repo_root():
    return REPO
