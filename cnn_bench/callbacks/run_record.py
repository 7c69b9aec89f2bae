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
import torch
from jsonargparse.typing import NonNegativeInt
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from cnn_bench.bench.common import synchronize
from cnn_bench.files import write_text_atomic
from cnn_bench.models.activations import activation_stats
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

    Kept rather than Lightning's ``ThroughputMonitor``, which does another job: it
    calls ``torch.cuda.synchronize()`` after every training batch
    (``lightning/pytorch/callbacks/throughput_monitor.py``, ``_update``, Lightning 2.6),
    so the host waits for the device at each step, which this project keeps free of
    syncs (``tests/test_syncs.py``); it logs a moving window at every logging step rather
    than one number per epoch, which ``metrics.json`` and ``cnn-bench report`` read; and it
    needs a ``batch_size_fn`` and warns on every run without a ``flops_per_batch``.
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

    It holds the architecture, data set, seed, parameter count (and the trainable part of
    it), multiply-adds at the native input size, fit wall time, one row per epoch (mean
    training loss, the epoch's ``train/`` and ``val/`` metrics, images per second) and
    the test metrics. The file is rewritten after every epoch, so a stopped run keeps
    what it did. Parameters and multiply-adds are logged to every logger as
    ``model/params`` and ``model/macs``.

    Put it after ``Throughput`` in the callback list: it reads the throughput logged in
    the same ``on_train_epoch_end``.

    With ``activation_stats`` N > 0, ``fit`` also records the network's activation
    statistics at initialisation (``init_activations``: each conv and linear layer's
    output mean and standard deviation, ``cnn_bench.models.activations``) for a batch of
    N standard normal images of the data's shape (seeded, the same for every run): the
    unit-variance input the initialisation schemes are derived for. Computed before a
    resumed run's checkpoint is loaded, so it is always the initial network's.

    Its history, wall time and the running loss of the current epoch are saved in every
    checkpoint, so a run resumed with ``--ckpt_path`` keeps the epochs trained before the
    interruption and continues the record as if it had not stopped.
    """

    def __init__(self, activation_stats: NonNegativeInt = 0) -> None:
        self.activation_stats = int(activation_stats)
        self.record: dict[str, Any] = {}
        self._fit_started = 0.0
        self._seconds_before = 0.0  # fit seconds of the run before it was resumed
        self._restored: dict[str, Any] | None = None
        self._val: dict[str, float] = {}
        self._loss_sum: Tensor | None = None
        self._batches = 0
        self._epoch = -1
        self._keep_once = False  # a resumed epoch's first start keeps the restored sums
        self._trained_here = 0  # batches of this epoch trained by this process
        self._lr: float | None = None  # the learning rate at the epoch's first step

    def _seconds(self) -> float:
        return self._seconds_before + time.perf_counter() - self._fit_started

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.record.get("history", []),
            "seconds": self._seconds() if self._fit_started else self._seconds_before,
            "epoch": self._epoch,
            "loss_sum": None if self._loss_sum is None else float(self._loss_sum),
            "batches": self._batches,
            "lr": self._lr,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)  # applied when fit starts, after setup

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
            # What the optimizer updates (--model.trainable batchnorm or head: far fewer).
            "trainable_params": sum(p.numel() for p in pl_module.parameters() if p.requires_grad),
            "macs": macs,
            "image_size": image_size,
            "epochs": 0,
            "fit_seconds": None,
            "history": [],
            "test": {},
        }
        if stage != "fit":  # fit logs them once it knows whether it resumes a run
            self._log_model_size(trainer)
        elif self.activation_stats and image_size:
            shape = (self.activation_stats, hparams.get("in_chans", 3), image_size, image_size)
            images = torch.randn(shape, generator=torch.Generator().manual_seed(0))
            model = getattr(pl_module, "model", pl_module)
            self.record["init_activations"] = activation_stats(model, images.to(pl_module.device))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                self.record.update(
                    run_id=run.id, name=run.name, group=run.group or None, tags=list(run.tags)
                )

    def _log_model_size(self, trainer: L.Trainer) -> None:
        sizes = {"model/params": self.record["params"], "model/macs": self.record["macs"] or 0}
        for logger in trainer.loggers:
            logger.log_metrics(sizes, step=0)

    def _write(self, trainer: L.Trainer) -> None:
        path = run_directory(trainer) / METRICS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.record, indent=1) + "\n")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_started = time.perf_counter()
        if self._restored is None and trainer.is_global_zero:
            # A resumed run logged these at its start: at step 0 again they would send the
            # continued W&B run's step axis backwards (W&B drops such rows online).
            self._log_model_size(trainer)
        if self._restored is not None:
            self._seconds_before = self._restored.get("seconds", 0.0)
            if trainer.is_global_zero:
                self.record["history"] = list(self._restored.get("history", []))
                self.record["epochs"] = len(self.record["history"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        restored, self._restored = self._restored, None
        batches = restored.get("batches", 0) if restored else 0
        # Saved inside an epoch (fewer batches than an epoch has): the run continues that
        # epoch, and its mean training loss counts the batches trained before.
        if 0 < batches < trainer.num_training_batches and restored.get("loss_sum") is not None:
            self._loss_sum = torch.tensor(restored["loss_sum"], device=pl_module.device)
            self._batches, self._epoch, self._keep_once = batches, restored["epoch"], True
            self._lr = restored.get("lr")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        continuing = self._keep_once and trainer.current_epoch == self._epoch
        self._keep_once, self._trained_here = False, 0
        if not continuing:
            self._loss_sum, self._batches, self._val = None, 0, {}
            # Recorded here, before the epoch's schedule steps, so a schedule study can draw
            # the rate each epoch trained at (the first parameter group's).
            self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        self._epoch = trainer.current_epoch

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
        self._trained_here += 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val = _scalars(trainer.callback_metrics, "val/")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        history = self.record["history"]
        if history and history[-1]["epoch"] == trainer.current_epoch and not self._trained_here:
            return  # an epoch already recorded, ended again by a resume: nothing new
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "seconds": self._seconds(),
            **_scalars(trainer.callback_metrics, "train/"),
            **self._val,
        }
        if self._batches:
            row["train/loss"] = float(self._loss_sum) / self._batches
        if self._lr is not None:
            row["train/lr"] = self._lr
        self.record["history"].append(row)
        self.record["epochs"] = len(self.record["history"])
        self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.record["fit_seconds"] = self._seconds()
            self._write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.record["test"] = _scalars(trainer.callback_metrics, "test/")
            self.record["checkpoint"] = str(trainer.ckpt_path) if trainer.ckpt_path else None
            self._write(trainer)
