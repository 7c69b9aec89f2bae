# cnn_bench: `make help` lists every target. `make train` and `make test` set
# themselves up on a fresh machine (they create .venv when it is missing).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MODEL  ?=
DATA   ?= cifar10
ARGS   ?=
RECIPE ?=
# What `make train` and `make seeds` run. No MODEL: the fast experiment (minutes on a CPU).
# MODEL: its experiment configs/experiment/MODEL_DATA.yaml when there is one, else MODEL on
# the recipe of DATA (configs/recipe/: cifar10_cosine, imagenet_step); RECIPE=name picks
# another recipe, even for a model with an experiment file.
EXP    ?= $(if $(MODEL),$(if $(RECIPE),,$(wildcard configs/experiment/$(MODEL)_$(DATA).yaml)),configs/experiment/fast_cifar10.yaml)
RUN_RECIPE := configs/recipe/$(or $(RECIPE),$(if $(filter imagenet,$(DATA)),imagenet_step,$(DATA)_cosine)).yaml
RUN_ARCH   := --model.arch $(MODEL) --experiment $(MODEL)_$(or $(RECIPE),$(DATA))
N      ?= 3
SWEEP  ?=
NAME   ?=
BUDGET ?= cpu
RUNS   ?= $(or $(WANDB_DIR),runs)
# Where the data lives: $CNN_BENCH_DATA when set, else ./data (the DataModules agree),
# made absolute here so that commands run from any folder (the tests do) find it.
DATA_DIR := $(abspath $(or $(CNN_BENCH_DATA),data))
SHARED_CIFAR := $(abspath ../shared/data/prepare_cifar10.py)
SHARED_MNIST := $(abspath ../shared/data/prepare_mnist.py)
export CNN_BENCH_DATA := $(DATA_DIR)

.DEFAULT_GOAL := help
.PHONY: help install data test test-fast lint train seeds study sweep report models data-check data-optimize bench gpu-check clean

help:  ## list every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/cnn-bench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/cnn-bench  ## create .venv and install cnn_bench (editable) with the dev tools

data: install  ## put CIFAR-10, its JPEG tree and MNIST in DATA_DIR (from ../shared/data when present)
	@if [ -f "$(DATA_DIR)/cifar-10-batches-py/test_batch" ] && [ -d "$(DATA_DIR)/cifar10-jpeg/test" ]; then \
		echo "CIFAR-10 is in $(DATA_DIR): cifar-10-batches-py and cifar10-jpeg"; \
	elif [ -f "$(SHARED_CIFAR)" ]; then \
		$(BIN)/python $(SHARED_CIFAR) "$(DATA_DIR)" --jpeg; \
	else \
		$(BIN)/python -c "from torchvision.datasets import CIFAR10; CIFAR10('$(DATA_DIR)', download=True)"; \
	fi
	@if [ -f "$(DATA_DIR)/MNIST/raw/t10k-labels-idx1-ubyte" ] && [ -f "$(DATA_DIR)/MNIST/raw/train-labels-idx1-ubyte" ]; then \
		echo "MNIST is in $(DATA_DIR): MNIST/raw"; \
	elif [ -f "$(SHARED_MNIST)" ]; then \
		$(BIN)/python $(SHARED_MNIST) "$(DATA_DIR)"; \
	else \
		$(BIN)/python -c "from torchvision.datasets import MNIST; MNIST('$(DATA_DIR)', download=True)"; \
	fi

test: data  ## run the whole test suite, slow tests included (CIFAR-10 is put in place first)
	$(BIN)/pytest

test-fast: data  ## the tests not marked slow (multi-process DDP, the largest networks): the inner loop
	$(BIN)/pytest -m "not slow"

lint: install  ## check style and common bugs with ruff
	$(BIN)/ruff check cnn_bench tests
	$(BIN)/ruff format --check cnn_bench tests

train: data  ## train and test: the fast recipe, or MODEL on DATA (its experiment, else DATA's recipe; RECIPE=), plus ARGS
	@if [ -z "$(MODEL)" ]; then \
		echo "make train: $(EXP): airbench-style ResNet, 8 epochs, then the test split"; \
		echo "  about 10 minutes on a 2-core CPU, seconds on a GPU ($$(nproc) cores here);"; \
		echo "  the full ResNet-18 recipe (200 epochs, ~30 h on a CPU): make train MODEL=resnet18"; \
	fi
	@test -n "$(EXP)" || test -f "$(RUN_RECIPE)" || { echo "make train: no recipe $(RUN_RECIPE) (ls configs/recipe)"; exit 2; }
	$(BIN)/cnn-bench fit $(if $(EXP),--config $(EXP),--config $(RUN_RECIPE) $(RUN_ARCH)) --test_after_fit true $(ARGS)

seeds: data  ## train and test EXP with seeds 0..N-1 (N=3): mean, std, 95% interval of top-1/top-5
	$(BIN)/cnn-bench seeds --config $(or $(EXP),$(RUN_RECIPE)) --n $(N) $(if $(EXP),$(if $(ARGS),-- $(ARGS)),-- $(RUN_ARCH) $(ARGS))

study: data  ## run study NAME=<configs/studies/NAME.yaml> (BUDGET=cpu|full) into docs/studies/NAME
	@test -n "$(NAME)" || { echo "usage: make study NAME=<study> (one of: $$(cd configs/studies && ls *.yaml | sed 's/.yaml//' | tr '\n' ' '))"; exit 2; }
	$(BIN)/cnn-bench study $(NAME) --budget $(BUDGET) $(ARGS)

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

bench: data  ## measure speed (overhead, data paths, throughput, time to accuracy) into docs/bench
	$(BIN)/cnn-bench bench $(ARGS)

gpu-check: data  ## on a GPU machine: precisions, channels_last, compile, syncs, DDP, time to 94% (docs/bench/gpu.md)
	$(BIN)/cnn-bench gpu-check $(ARGS)

data-check: install  ## read every image of a tree, report classes and bad files: DIR (DATA_DIR/imagenet)
	$(BIN)/cnn-bench data-check $(or $(DIR),$(DATA_DIR)/imagenet) $(ARGS)

data-optimize: install  ## write tree DIR (DATA_DIR/imagenet) as litdata chunks in OUT (DIR-chunks), for --data.format litdata
	$(BIN)/cnn-bench data-optimize $(or $(DIR),$(DATA_DIR)/imagenet) $(or $(OUT),$(or $(DIR),$(DATA_DIR)/imagenet)-chunks) $(ARGS)

clean:  ## remove caches and build files (keeps .venv, runs/ and data/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
