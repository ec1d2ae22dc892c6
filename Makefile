# palsyseg — the two commands: `make demo` and `make test`. Both set up .venv when needed.
#
# Install order matters on these machines: torch and torchvision first, pinned together (the
# builds on this disk), then the project with the frozen constraints so pip never resolves a
# newer torch. A stamp file makes a second run skip installing.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.palsyseg-installed
TORCH  := torch==2.14.1 torchvision==0.29.1

# Offline, quiet, side-effect free (the CLI sets the same before importing these libraries).
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export MPLBACKEND := Agg
export DVC_SITE_CACHE_DIR := $(CURDIR)/.dvc/site-cache
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# DVC stages call `palsyseg`: the venv comes first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

# Demo-sized training on 2 CPU cores cannot reach the production FPP floor, and at this budget
# the candidate need not beat the baselines: the demo states two relaxed gates on the command
# line so its run registers a version. That version is listed as `pass (relaxed: ...)`, and
# `registry promote` re-checks it under the production policy (mlflow/promotion.yaml) alone,
# which refuses it: only the policy makes champions.
DEMO_GATES := --gate min_primary=0 --gate beat_baselines=false
# The demo's candidate fine-tunes the shipped phantom-trained palsynet ($(PRETRAINED), made by
# `make pretrained`) for 8 epochs on the phantom stream (fresh patients drawn on the fly, each draw
# kept two epochs) at 128 px and lr 0.02; its baselines train from scratch for 6 epochs on the default
# dataset's 60 training photos at 96 px and the recipe's lr 0.06 (train.baselines: they show the
# comparison step; the full comparison at one budget is benchmarks/bench_quality.py's job).
# Measured numbers: README, "The two commands".
PRETRAINED := pretrained/palsynet-phantom-128.pt
DEMO_EPOCHS := 8
DEMO_TRAIN := --image-size 128 --set stream_patients=50 --set stream_repeats=2 \
	--set init_weights=$(PRETRAINED) --set lr=0.02 \
	--set 'baselines={stream_patients: 0, image_size: 96, init_weights: "", lr: 0.06, epochs: 6}'

.PHONY: all install demo test lint format clean help pretrained

all: help

help:
	@echo "make demo   set up .venv, rebuild the default dataset, run the whole pipeline locally, register a model"
	@echo "make test   set up .venv, run the test suite"
	@echo "make lint   ruff check + format check"
	@echo "make pretrained   re-make the shipped phantom-trained palsynet the demo fine-tunes (~14-35 min)"

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	@touch $@

demo: $(STAMP)
	@echo "== 1/2 default dataset: regenerated from params.yaml and checked against data.dvc"
	$(BIN)/dvc repro data.dvc
	@git diff --quiet -- data.dvc 2>/dev/null || { echo "data.dvc changed: the generator no longer reproduces the pinned dataset" >&2; exit 1; }
	@echo "== 2/2 pipeline on kfp.local: validate -> split -> train -> evaluate -> gates -> register"
	$(BIN)/palsyseg pipeline run --threads 1 --epochs $(DEMO_EPOCHS) $(DEMO_TRAIN) $(DEMO_GATES)

# Re-make the shipped warm start (~20-35 min on 2 cores): palsynet at the benchmark's settings, 40 epochs, on
# phantom faces of seed 1001 (pretrained/params.yaml says why that seed), its best epoch kept.
pretrained: $(STAMP)
	rm -rf build/pretrained
	$(BIN)/palsyseg data synth --out build/pretrained/data --patients 40 --seed 1001 --size 250
	$(BIN)/palsyseg data split build/pretrained/data --out build/pretrained/split \
		--params pretrained/params.yaml
	$(BIN)/palsyseg train --data build/pretrained/split --model palsynet \
		--out build/pretrained/run --params pretrained/params.yaml --threads 2
	cp build/pretrained/run/best.pt $(PRETRAINED).tmp && mv $(PRETRAINED).tmp $(PRETRAINED)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests components pipelines benchmarks
	$(BIN)/ruff format --check src tests components pipelines benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests components pipelines benchmarks
	$(BIN)/ruff check --fix src tests components pipelines benchmarks

clean:
	rm -rf build .pytest_cache
