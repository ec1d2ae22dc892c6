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

DATA      := data
SPLITS    := build/splits

.PHONY: all install demo test lint format clean help

all: help

help:
	@echo "make demo   set up .venv, build + validate + split the default synthetic dataset"
	@echo "make test   set up .venv, run the test suite"
	@echo "make lint   ruff check + format check"

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	@touch $@

demo: $(STAMP)
	$(BIN)/palsyseg data synth --out $(DATA) --patients 24 --seed 7 --force
	$(BIN)/palsyseg data validate $(DATA) --report build/validation.html
	$(BIN)/palsyseg data split $(DATA) --out $(SPLITS) --force

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
