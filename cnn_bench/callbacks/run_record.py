"""The run's record: the resolved config, training throughput and ``metrics.json``.

``RunConfigCallback`` saves the resolved config; ``Throughput`` logs training images
per second; ``RunSummary`` writes ``metrics.json`` (size, timings, per-epoch and test
metrics: what ``cnn-bench report`` reads).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from cnn_bench.bench.common import synchronize
from cnn_bench.files import write_text_atomic
from cnn_bench.models.macs import model_macs
from cnn_bench.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    WANDB_CONFIG_NAME,
    dataset_name,
    run_directory,
    wandb_loggers,
)


class RunConfigCallback(SaveConfigCallback):
    """Write the resolved LightningCLI config into the run folder and upload it to W&B.

    The file is the complete config that ``--config`` accepts, so any run can be
    repeated with ``cnn-bench fit --config <run>/config.yaml``.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False  # the shared log dir would be overwritten by every run
        super().__init__(*args, **kwargs)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_directory(trainer)  # on every rank: save_config runs on rank zero only
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_dir = run_directory(trainer)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / CONFIG_FILE
        write_text_atomic(path, self.parser.dump(self.config, skip_none=False))
        for logger in wandb_loggers(trainer):
            logger.experiment.config.update(
                {"cli": self.config.clone().as_dict()}, allow_val_change=True
            )
            upload = Path(logger.experiment.dir) / WANDB_CONFIG_NAME
            write_text_atomic(upload, path.read_text())
            logger.experiment.save(str(upload), base_path=logger.experiment.dir, policy="now")


class Throughput(Callback):
    """Training images per second, logged once per epoch as ``train/images_per_sec``.

    The clock is read only at epoch boundaries (one device sync each), never per step,
    and it stops while validation runs. Under DDP the number is the whole job's
    throughput: every process trains on batches of the same size in lockstep, so the
    job's images are this process's times the world size. No collective is used: a
    reduce here met rank zero's progress bar, which all-gathers the epoch's metrics
    at the same point, and the two ranks waited for each other forever.
    """

    def __init__(self) -> None:
        self._images = 0
        self._seconds = 0.0
        self._started: float | None = None
        self._paused = False

    def _start(self, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        self._started = time.perf_counter()

    def _stop(self, pl_module: L.LightningModule) -> bool:
        if self._started is None:
            return False
        synchronize(pl_module.device)
        self._seconds += time.perf_counter() - self._started
        self._started = None
        return True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._images, self._seconds = 0, 0.0
        self._start(pl_module)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._images += len(batch[1])

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._paused = self._stop(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._paused:
            self._paused = False
            self._start(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(pl_module)
        images = self._images * trainer.world_size
        if self._seconds > 0:
            pl_module.log("train/images_per_sec", images / self._seconds, rank_zero_only=True)


def _scalars(metrics: dict[str, Tensor], prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(prefix)}


class RunSummary(Callback):
    """Keep ``<run dir>/metrics.json``, the record ``cnn-bench report`` reads without W&B.

    It holds the architecture, data set, seed, parameter count, multiply-adds at the
    native input size, fit wall time, one row per epoch (mean training loss, the epoch's
    ``train/`` and ``val/`` metrics, images per second) and the test metrics. The file
    is rewritten after every epoch, so a stopped run keeps what it did. Parameters and
    multiply-adds are logged to every logger as ``model/params`` and ``model/macs``.

    Put it after ``Throughput`` in the callback list: it reads the throughput logged in
    the same ``on_train_epoch_end``.
    """

    def __init__(self) -> None:
        self.record: dict[str, Any] = {}
        self._fit_started = 0.0
        self._val: dict[str, float] = {}
        self._loss_sum: Tensor | None = None
        self._batches = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_directory(trainer)  # on every rank: the writes below are rank zero's alone
        if self.record or not trainer.is_global_zero:
            return  # a test after fit in the same process adds to the same record
        hparams = pl_module.hparams
        image_size = hparams.get("image_size")
        macs = (
            model_macs(pl_module, (1, hparams.get("in_chans", 3), image_size, image_size))
            if image_size
            else None
        )
        seed = os.environ.get("PL_GLOBAL_SEED")
        self.record = {
            "arch": hparams.get("arch"),
            "dataset": dataset_name(trainer.datamodule) if trainer.datamodule else None,
            "seed": int(seed) if seed is not None else None,
            "params": sum(p.numel() for p in pl_module.parameters()),
            "macs": macs,
            "image_size": image_size,
            "epochs": 0,
            "fit_seconds": None,
            "history": [],
            "test": {},
        }
        for logger in trainer.loggers:
            logger.log_metrics(
                {"model/params": self.record["params"], "model/macs": macs or 0}, step=0
            )
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                self.record.update(
                    run_id=run.id, name=run.name, group=run.group or None, tags=list(run.tags)
                )

    def _write(self, trainer: L.Trainer) -> None:
        path = run_directory(trainer) / METRICS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.record, indent=1) + "\n")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss_sum, self._batches, self._val = None, 0, {}

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"].detach() if isinstance(outputs, dict) else outputs.detach()
        # Summed on the device: reading the value each step would wait for the device.
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._batches += 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val = _scalars(trainer.callback_metrics, "val/")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "seconds": time.perf_counter() - self._fit_started,
            **_scalars(trainer.callback_metrics, "train/"),
            **self._val,
        }
        if self._batches:
            row["train/loss"] = float(self._loss_sum) / self._batches
        self.record["history"].append(row)
        self.record["epochs"] = len(self.record["history"])
        self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.record["fit_seconds"] = time.perf_counter() - self._fit_started
            self._write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.record["test"] = _scalars(trainer.callback_metrics, "test/")
            self.record["checkpoint"] = str(trainer.ckpt_path) if trainer.ckpt_path else None
            self._write(trainer)
