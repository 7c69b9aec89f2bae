"""No training step waits for the device: counted on CPU with a dispatch mode.

On a GPU, reading a device value on the host (``.item()``, ``bool(tensor)``, what
torch runs as ``aten._local_scalar_dense``) blocks until every queued kernel has run,
and a copy from host memory on every batch does the same on a synchronous stream. On a
CPU both are cheap but still visible to a ``TorchDispatchMode``: that is what these
tests count, for the training steps of a real run with the default callbacks, and for
the normalisation constants of each DataModule."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cnn_bench.cli import cli
from cnn_bench.data import CIFAR10DataModule, ImageNetDataModule
from tests.conftest import REPO

SCALAR_READ = torch.ops.aten._local_scalar_dense.default


class HostReads(TorchDispatchMode):
    """Counts host reads of tensor values per training step while ``step`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.step: int | None = None
        self.reads: Counter[int] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is SCALAR_READ and self.step is not None:
            self.reads[self.step] += 1
        return func(*args, **(kwargs or {}))


class StepWindow(L.Callback):
    """Opens the count at each training batch from ``first`` on, closes it at the epoch's
    end: a step's own hooks (callbacks, EMA) count with it, validation does not."""

    def __init__(self, mode: HostReads, first: int) -> None:
        self.mode, self.first = mode, first

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.mode.step = batch_idx if batch_idx >= self.first else None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.mode.step = None

    def on_validation_start(self, trainer, pl_module) -> None:
        self.mode.step = None


@pytest.mark.parametrize(
    "extra",
    [[], ["--model.ema_decay", "0.99", "--config", str(REPO / "configs/trainer/cpu.yaml")]],
    ids=["defaults", "ema"],
)
def test_training_steps_read_nothing_back(
    tmp_path: Path, cifar_root: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str]
) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("CNN_BENCH_DATA", str(cifar_root))
    steps = 24
    run = cli(
        [
            "--config",
            str(REPO / "configs/experiment/lenet5_cifar10.yaml"),
            *extra,
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            str(steps),
            "--trainer.limit_val_batches",
            "1",
            "--trainer.log_every_n_steps",
            "10",
        ],
        run=False,
    )
    mode = HostReads()
    run.trainer.callbacks.append(StepWindow(mode, first=2))
    with mode:
        run.trainer.fit(run.model, datamodule=run.datamodule)
    # Steps 10 and 20 write the loggers, the last one ends the epoch: those may read.
    logging = {9, 19, steps - 1}
    quiet = {s: mode.reads[s] for s in range(2, steps) if s not in logging}
    assert quiet == dict.fromkeys(quiet, 0), quiet
    assert any(mode.reads[s] for s in logging)  # the counter sees a read when there is one


class HostCopies(TorchDispatchMode):
    """Counts copies onto the meta device, our stand-in for a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and args[0].device.type == "cpu":
            self.copies += out.device.type == "meta"
        return out


@pytest.mark.parametrize("module", [CIFAR10DataModule, ImageNetDataModule])
def test_normalisation_constants_go_to_the_device_once(module, tmp_path: Path) -> None:
    data = module(data_dir=str(tmp_path))
    data.mean, data.std = torch.tensor([125.0, 123.0, 114.0]), torch.tensor([63.0, 62.0, 66.0])
    batch = (torch.empty(4, 3, 8, 8, dtype=torch.uint8, device="meta"), torch.zeros(4))
    mode = HostCopies()
    with mode:
        for _ in range(3):
            images, _ = data.on_after_batch_transfer(batch, 0)
    assert images.dtype == torch.float32 and images.device.type == "meta"
    assert mode.copies == 2  # mean and std, at the first batch only
