"""Real two-process DDP on CPU (gloo) with the callbacks a user gets: the progress bar,
checkpoints, the run record, W&B or no logger, EMA, and the ``configs/trainer/ddp.yaml``
settings a CPU can run. A collective that only some ranks enter hangs, so every run has
a timeout and a hang fails the test (its whole process group is killed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnn_bench.data import CIFAR10DataModule
from tests.conftest import REPO

LENET = str(REPO / "configs/experiment/lenet5_cifar10.yaml")
DDP = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
# Two short epochs, a validation and a test: every epoch-end and test-end hook runs twice.
SHORT = [
    "--trainer.max_epochs",
    "2",
    "--trainer.limit_train_batches",
    "6",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.limit_test_batches",
    "2",
    "--test_after_fit",
    "true",
]
TIMEOUT = 150  # a healthy run takes 15-40 s here; a deadlock never ends


def start_ddp(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """``cnn-bench ARGS`` started in its own process group (Lightning starts the other
    ranks as child processes: killing rank 0 alone would orphan them)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cnn_bench.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run_ddp(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``cnn-bench ARGS`` in its own process group, killed whole when it outlives TIMEOUT."""
    return finish(start_ddp(args, cwd, env))


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"DDP run hung for {TIMEOUT} s (a collective mismatch):\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def _metrics(root: Path) -> dict:
    (path,) = root.rglob("metrics.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_defaults_with_progress_bar_and_wandb(tmp_path: Path, cli_env: dict) -> None:
    """The README's DDP command with every default callback, progress bar included."""
    _ok(run_ddp(["fit", "--config", LENET, *DDP, *SHORT], tmp_path, cli_env))
    record = _metrics(tmp_path)
    assert record["epochs"] == 2 and "test/acc1" in record["test"]
    # The whole job's throughput: both ranks' images, counted without a collective.
    assert all(row["train/images_per_sec"] > 0 for row in record["history"])
    assert len(list(tmp_path.rglob("last.ckpt"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("logger", ["false", "lightning.pytorch.loggers.CSVLogger"])
def test_without_wandb_the_run_folder_is_agreed_on_every_rank(
    tmp_path: Path, cli_env: dict, logger: str
) -> None:
    """No logger, or another one: the run folder (config, metrics, checkpoints) is
    resolved on every rank, not by a broadcast that rank zero alone enters."""
    _ok(
        run_ddp(
            ["fit", "--config", LENET, *DDP, *SHORT, "--trainer.logger", logger], tmp_path, cli_env
        )
    )
    record = _metrics(tmp_path)
    assert record["epochs"] == 2 and "test/acc1" in record["test"]
    (config,) = tmp_path.rglob("config.yaml")
    assert (config.parent / "metrics.json").is_file()


@pytest.mark.slow
def test_ema_and_lr_scaling_under_ddp(tmp_path: Path, cli_env: dict) -> None:
    """The averaged copy takes no gradients: DDP does not wait for them. And the learning
    rate follows the global batch: 128 images x 2 processes x 2 accumulated batches = 512,
    twice the 256 the configured rates are for, so one-cycle's peak is 2 x 0.05."""
    scaling = ["--model.lr_scaling", "linear", "--trainer.accumulate_grad_batches", "2"]
    args = ["fit", "--config", LENET, *DDP, *SHORT, "--model.ema_decay", "0.9", *scaling]
    _ok(run_ddp(args, tmp_path, cli_env))
    record = _metrics(tmp_path)
    assert "val/ema_acc1" in record["history"][-1] and "test/ema_acc1" in record["test"]
    (last,) = tmp_path.rglob("last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 2 * 6 // 2  # optimizer steps: batches / accumulation
    (group,) = state["optimizer_states"][0]["param_groups"]
    assert group["max_lr"] == pytest.approx(0.05 * 128 * 2 * 2 / 256)


@pytest.mark.slow
def test_the_ddp_config_on_cpu(tmp_path: Path, cli_env: dict) -> None:
    """configs/trainer/ddp.yaml as a CPU can run it: DDP, SyncBatchNorm, bf16-mixed,
    on a network with batch norm (the fast recipe's)."""
    args = [
        "fit",
        "--config",
        str(REPO / "configs/experiment/fast_cifar10.yaml"),
        "--config",
        str(REPO / "configs/trainer/ddp.yaml"),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--data.batch_size",
        "32",
        *SHORT,
    ]
    _ok(run_ddp(args, tmp_path, cli_env))
    assert _metrics(tmp_path)["epochs"] == 2


class NaNOnRankOne(CIFAR10DataModule):
    """Real CIFAR-10 batches; rank one's last training batch of the first epoch carries a
    NaN. Rank zero's loss of that step is finite (the NaN reaches its weights only through
    that step's gradients), so at the epoch-end check only rank one has seen it."""

    def on_after_batch_transfer(self, batch, dataloader_idx):
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        trainer = self.trainer
        if not (trainer.training and trainer.global_rank == 1 and trainer.global_step == 5):
            return batch
        images, labels = batch
        images = images.clone()
        images[0, 0, 0, 0] = float("nan")
        return images, labels


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path: Path, cli_env: dict) -> None:
    """One process diverges: all of them stop together, with one line, not a hang."""
    env = {**cli_env, "PYTHONPATH": str(REPO)}
    args = ["fit", "--config", LENET, *DDP, *SHORT, "--data.class_path", f"{__name__}.NaNOnRankOne"]
    done = run_ddp(args, tmp_path, env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("cnn-bench: error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "cnn-bench: error: train/loss is nan at step 6"
    )
