# cnn_bench: `make help` lists every target. `make train` and `make test` set
# themselves up on a fresh machine (they create .venv when it is missing).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MODEL  ?= resnet18
DATA   ?= cifar10
ARGS   ?=
EXP    ?= configs/experiment/$(MODEL)_$(DATA).yaml
N      ?= 3
SWEEP  ?=
RUNS   ?= $(or $(WANDB_DIR),runs)
# Where the data lives: $CNN_BENCH_DATA when set, else ./data (the DataModules agree).
DATA_DIR := $(or $(CNN_BENCH_DATA),data)
SHARED_CIFAR := ../shared/data/prepare_cifar10.py
export CNN_BENCH_DATA := $(DATA_DIR)

.DEFAULT_GOAL := help
.PHONY: help install data test lint train seeds sweep report models data-check bench clean

help:  ## list every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/cnn-bench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/cnn-bench  ## create .venv and install cnn_bench (editable) with the dev tools

data: install  ## put CIFAR-10 in DATA_DIR (from ../shared/data when present, else download)
	@if [ -f "$(DATA_DIR)/cifar-10-batches-py/test_batch" ]; then \
		echo "CIFAR-10 is in $(DATA_DIR)/cifar-10-batches-py"; \
	elif [ -f "$(SHARED_CIFAR)" ]; then \
		$(BIN)/python $(SHARED_CIFAR) "$(DATA_DIR)" --jpeg; \
	else \
		$(BIN)/python -c "from torchvision.datasets import CIFAR10; CIFAR10('$(DATA_DIR)', download=True)"; \
	fi

test: data  ## run the test suite (CIFAR-10 is put in place first by `make data`)
	$(BIN)/pytest

lint: install  ## check style and common bugs with ruff
	$(BIN)/ruff check cnn_bench tests
	$(BIN)/ruff format --check cnn_bench tests

train: data  ## train MODEL (resnet18) on DATA (cifar10): configs/experiment/MODEL_DATA.yaml, plus ARGS
	$(BIN)/cnn-bench fit --config $(EXP) $(ARGS)

seeds: data  ## train and test EXP with seeds 0..N-1 (N=3): mean, std, 95% interval of top-1/top-5
	$(BIN)/cnn-bench seeds --config $(EXP) --n $(N) $(if $(ARGS),-- $(ARGS))

# The agent runs `cnn-bench fit ...` from the sweep file's command, so .venv/bin goes on PATH.
sweep: install  ## run W&B sweep SWEEP=configs/sweeps/<name>.yaml with an agent here (needs wandb login)
	@test -n "$(SWEEP)" || { echo "usage: make sweep SWEEP=configs/sweeps/<name>.yaml"; exit 2; }
	@id=$$($(BIN)/wandb sweep --project cnn_bench $(SWEEP) 2>&1 | tee /dev/stderr \
		| awk '/wandb agent/ {print $$NF}'); \
	test -n "$$id" && PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/wandb agent $$id

report: install  ## Markdown table and PNG plots of the runs in RUNS (runs/) into RUNS/report
	$(BIN)/cnn-bench report $(RUNS)

models: install  ## print every registered model with parameters and FLOPs
	$(BIN)/cnn-bench models $(ARGS)

bench: data  ## measure speed (overhead, data path, throughput, time to accuracy) into docs/bench
	$(BIN)/cnn-bench bench $(ARGS)

data-check: install  ## read every image of a tree, report classes and bad files: DIR (DATA_DIR/imagenet)
	$(BIN)/cnn-bench data-check $(or $(DIR),$(DATA_DIR)/imagenet) $(ARGS)

clean:  ## remove caches and build files (keeps .venv, runs/ and data/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
