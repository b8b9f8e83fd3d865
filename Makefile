# The README's commands. `make install` is idempotent: a second run only re-checks.
PYTHON_SYS ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sharpmask-installed
PYTEST_ARGS ?=

.PHONY: install test demo demo-all detect-demo refinemask-demo bench clean-datasets

install: $(STAMP)

$(STAMP): setup.py pyproject.toml tools/install_detectron2.py Makefile
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1 "setuptools<81" wheel fvcore \
		pycocotools opencv-python-headless numpy matplotlib tqdm imgviz pytest
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	$(PY) tools/shapes_demo.py --output output/demo

demo-all: install
	$(PY) tools/shapes_demo.py --all --output output/demo_all

# Fast R-CNN on each method's proposals; uses (and if needed trains) make demo-all's networks.
detect-demo: install
	test -f output/demo_all/instancefcn/model_final.pth || $(MAKE) demo-all
	$(PY) tools/detection_demo.py proposals --output output/detect_demo

refinemask-demo: install
	$(PY) tools/detection_demo.py refinemask --output output/detect_demo

bench: install
	$(PY) tools/benchmark.py --output output/benchmark.md

clean-datasets:
	rm -rf datasets
