# The README's commands. `make install` is idempotent: a second run only re-checks.
PYTHON_SYS ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sharpmask-installed
PYTEST_ARGS ?=
# Exact versions of every package, from the last install that passed the tests; `make lock`
# rewrites it from .venv. `make install LOCK=` resolves the newest allowed versions instead.
LOCK ?= requirements/lock.txt
CONSTRAINT := $(if $(LOCK),-c $(LOCK))

.PHONY: install lock test demo demo-all detect-demo refinemask-demo bench scale-bench test-margins convergence open-world-demo test-user-machine \
	clean-datasets

install: $(STAMP)

$(STAMP): setup.py pyproject.toml tools/install_detectron2.py Makefile $(LOCK)
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	# opencv-contrib-python-headless (it adds Selective Search) replaces opencv-python-headless:
	# both install the cv2 module, so the plain one goes first (a no-op when absent).
	$(PY) -m pip uninstall -y -q opencv-python-headless opencv-python
	$(PY) -m pip install $(CONSTRAINT) torch==2.14.1 torchvision==0.29.1 "setuptools<81" wheel \
		fvcore pycocotools faster-coco-eval opencv-contrib-python-headless numpy matplotlib tqdm \
		imgviz pytest hypothesis
	$(PY) tools/install_detectron2.py $(if $(LOCK),--constraint $(LOCK))
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

# detectron2 is left out: tools/install_detectron2.py pins its source wheel by sha256.
lock: install
	{ echo "# Exact versions from an install that passed 'make test'. Written by 'make lock';"; \
	  echo "# used by 'make install' as pip constraints. docs/install.md."; \
	  $(PY) -m pip freeze --all --exclude-editable --exclude pip --exclude detectron2; \
	} > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The suite as on a user's machine: a GPU (torch.cuda.is_available() made true by
# tests/user_machine/sitecustomize.py, unless CUDA_VISIBLE_DEVICES is empty), COCO 2014/2017
# files under $$DETECTRON2_DATASETS and another $$SHARPMASK_DATASETS. It must pass as `make test`.
USER_MACHINE := output/user_machine
test-user-machine: install
	rm -rf $(USER_MACHINE) && $(PY) tests/user_machine/make_fake_coco.py $(USER_MACHINE)/datasets
	DETECTRON2_DATASETS=$(CURDIR)/$(USER_MACHINE)/datasets SHARPMASK_DATASETS=/nonexistent \
		PYTHONPATH=$(CURDIR)/tests/user_machine $(PY) -m pytest $(PYTEST_ARGS)

demo: install
	$(PY) tools/shapes_demo.py --output output/demo

demo-all: install
	$(PY) tools/shapes_demo.py --all --output output/demo_all

# Learning curves: each method trained far longer than make demo, evaluated at 6 checkpoints.
convergence: install
	$(PY) tools/convergence.py --output output/convergence

# Recall on seen and unseen categories: every method trained on 4 of the 8 shapes categories.
open-world-demo: install
	$(PY) tools/open_world_demo.py --output output/open_world_demo

# Fast R-CNN on each method's proposals; uses (and if needed trains) make demo-all's networks.
detect-demo: install
	test -f output/demo_all/instancefcn/model_final.pth || $(MAKE) demo-all
	$(PY) tools/detection_demo.py proposals --output output/detect_demo

refinemask-demo: install
	$(PY) tools/detection_demo.py refinemask --output output/detect_demo

bench: install
	$(PY) tools/benchmark.py --output output/benchmark.md

# Memory, time and file sizes at COCO scale on a synthetic COCO-size set (written first).
scale-bench: install
	$(PY) tools/scale_benchmark.py --output output/scale_benchmark.md

# The training tests over 5 seeds, 1 and 2 threads and two CPU kernel paths (their limits).
test-margins: install
	$(PY) tools/test_margins.py --output output/test_margins.md

clean-datasets:
	rm -rf datasets
