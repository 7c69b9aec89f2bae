"""Shared fixtures: the real CIFAR-10 copy and a way to run ``cnn-bench`` as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnn_bench.data.cifar10 import FOLDER
from cnn_bench.data.mnist import FOLDER as MNIST_FOLDER

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The folder holding ``cifar-10-batches-py`` (``$CNN_BENCH_DATA``, else ./data)."""
    # Absolute: the tests run commands from other folders.
    root = Path(os.environ.get("CNN_BENCH_DATA", REPO / "data")).resolve()
    if not (root / FOLDER / "test_batch").is_file():
        pytest.fail(
            f"CIFAR-10 not found in {root}: run `make data` or set CNN_BENCH_DATA", pytrace=False
        )
    return root


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder holding ``MNIST/raw`` (``$CNN_BENCH_DATA``, else ./data)."""
    root = Path(os.environ.get("CNN_BENCH_DATA", REPO / "data")).resolve()
    if not (root / MNIST_FOLDER / "t10k-labels-idx1-ubyte").is_file():
        pytest.fail(f"MNIST not found in {root}: run `make data`", pytrace=False)
    return root


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a new user: no W&B credentials, a fresh HOME, W&B files in tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), WANDB_DIR=str(tmp_path), **extra)
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``cnn-bench ARGS`` in a subprocess, as from a shell in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "cnn_bench.cli", *args],
        cwd=cwd,
        env=env or clean_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli_env(tmp_path: Path, cifar_root: Path) -> dict[str, str]:
    return clean_env(tmp_path, CNN_BENCH_DATA=str(cifar_root))


@pytest.fixture
def every_25_steps(tmp_path: Path) -> str:
    """The default callbacks, every one of them (the progress bar and the run record
    included), with the periodic last.ckpt every 25 steps instead of 500: one named
    callback changed, the others kept."""
    path = tmp_path / "every25.yaml"
    path.write_text("checkpoint:\n  every_n_train_steps: 25\n")
    return str(path)
