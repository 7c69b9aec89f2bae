"""Callbacks that keep a run's record, in the run folder and in W&B, and never lose its work.

``RunConfigCallback`` saves the resolved config; ``Throughput`` logs training images
per second; ``RunSummary`` writes ``metrics.json`` (size, timings, per-epoch and test
metrics: what ``cnn-bench report`` reads); ``TestPredictions`` logs the test-time
confusion matrix and the most confident mistakes. ``StopOnNonFinite`` stops at the first
non-finite loss before it is checkpointed; ``SaveOnPreemption`` saves ``last.ckpt`` on
SIGTERM. ``configs/trainer/default.yaml`` puts them in every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor, nn

from cnn_bench.commands.models import count_macs

METRICS_FILE = "metrics.json"
# W&B keeps its own run config as ``config.yaml`` among a run's files; the CLI's file
# is uploaded under another name so that neither replaces the other.
WANDB_CONFIG_NAME = "lightning_config.yaml"


def run_directory(trainer: L.Trainer) -> Path:
    """The folder of this run: ``<save_dir>/<project>/<run id>`` under W&B, where the
    checkpoints go too; else the trainer's log directory."""
    logger = trainer.logger
    if isinstance(logger, WandbLogger):
        return (
            Path(logger.save_dir or trainer.default_root_dir)
            / str(logger.name)
            / str(logger.version)
        )
    return Path(trainer.log_dir or trainer.default_root_dir)


def _wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


class RunConfigCallback(SaveConfigCallback):
    """Write the resolved LightningCLI config into the run folder and upload it to W&B.

    The file is the complete config that ``--config`` accepts, so any run can be
    repeated with ``cnn-bench fit --config <run>/config.yaml``.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False  # the shared log dir would be overwritten by every run
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_dir = run_directory(trainer)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "config.yaml"
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=False)
        for logger in _wandb_loggers(trainer):
            logger.experiment.config.update(
                {"cli": self.config.clone().as_dict()}, allow_val_change=True
            )
            upload = Path(logger.experiment.dir) / WANDB_CONFIG_NAME
            upload.write_text(path.read_text())
            logger.experiment.save(str(upload), base_path=logger.experiment.dir, policy="now")


def dataset_name(datamodule: type | object, name: str | None = None) -> str:
    """A data set's short name: ``name`` or the DataModule's ``name`` when given, else
    its class name without ``DataModule`` (``CIFAR10DataModule`` -> ``cifar10``)."""
    cls = datamodule if isinstance(datamodule, type) else type(datamodule)
    return (
        name or getattr(datamodule, "name", None) or cls.__name__.removesuffix("DataModule").lower()
    )


def model_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on a zero input of ``input_shape`` (batch
    included), counted as ``cnn-bench models`` counts them.

    Runs in eval mode, so batch-norm statistics are left as they were.
    """
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        return count_macs(model.eval(), torch.zeros(input_shape, device=device))
    finally:
        model.train(was_training)


def _synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


class Throughput(Callback):
    """Training images per second, logged once per epoch as ``train/images_per_sec``.

    The clock is read only at epoch boundaries (one device sync each), never per step,
    and it stops while validation runs. Under DDP the images of every process count,
    so the number is the whole job's throughput.
    """

    def __init__(self) -> None:
        self._images = 0
        self._seconds = 0.0
        self._started: float | None = None
        self._paused = False

    def _start(self, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module.device)
        self._started = time.perf_counter()

    def _stop(self, pl_module: L.LightningModule) -> bool:
        if self._started is None:
            return False
        _synchronize(pl_module.device)
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
        images = trainer.strategy.reduce(
            torch.tensor(float(self._images), device=pl_module.device), reduce_op="sum"
        )
        if self._seconds > 0:
            pl_module.log(
                "train/images_per_sec", float(images) / self._seconds, rank_zero_only=True
            )


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
        path.write_text(json.dumps(self.record, indent=1) + "\n")

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


def _display_images(images: Tensor, datamodule: Any) -> Tensor:
    """Model inputs back to uint8 ``N x H x W x C`` pictures: un-normalised with the
    DataModule's ``mean``/``std`` (0-255 scale) when it has them, else stretched per image."""
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if isinstance(mean, Tensor) and isinstance(std, Tensor) and mean.numel() == images.shape[1]:
        shape = (1, -1, 1, 1)
        pixels = images * std.to(images).view(shape) + mean.to(images).view(shape)
    else:
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        pixels = (images - low) / (high - low).clamp_min(1e-8) * 255
    return pixels.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)


class TestPredictions(Callback):
    """At test time, log the confusion matrix and a table of the worst mistakes to W&B.

    The worst mistakes are the wrong predictions made with the highest confidence,
    shown with their images, label, prediction and the probability given to the
    true class. Both are gathered from every process under DDP and logged by rank
    zero; the matrix is also written to ``<run dir>/confusion_matrix.csv``. Needs a
    ``test_step`` that returns ``{"logits", "labels"}``.

    Args:
        num_images: rows of the predictions table.
        max_chart_classes: above this many classes the matrix is only written to the
            file (a W&B table holds at most 10,000 rows, one per cell).
    """

    def __init__(self, num_images: int = 32, max_chart_classes: int = 100) -> None:
        self.num_images = num_images
        self.max_chart_classes = max_chart_classes

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = pl_module.hparams.num_classes
        self.matrix = torch.zeros(n * n, dtype=torch.int64, device=pl_module.device)
        # The candidates stay on the device, merged batch by batch; confidence -1 marks
        # a correct prediction or an empty slot.
        self.confidence = torch.zeros(0, device=pl_module.device)
        self.label_prob = torch.zeros(0, device=pl_module.device)
        self.labels = torch.zeros(0, dtype=torch.int64, device=pl_module.device)
        self.preds = torch.zeros_like(self.labels)
        self.images: Tensor | None = None

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        logits, labels = outputs["logits"].detach(), outputs["labels"]
        probs = logits.float().softmax(dim=1)
        confidence, preds = probs.max(dim=1)
        n = probs.shape[1]
        self.matrix += torch.bincount(labels * n + preds, minlength=n * n)
        wrong = torch.where(preds != labels, confidence, torch.full_like(confidence, -1.0))
        k = min(self.num_images, len(wrong))
        top = wrong.topk(k).indices
        images = _display_images(batch[0][top].float(), trainer.datamodule)
        label_prob = probs[top].gather(1, labels[top, None])[:, 0]
        self._merge(wrong[top], label_prob, labels[top], preds[top], images)

    def _merge(
        self, confidence: Tensor, label_prob: Tensor, labels: Tensor, preds: Tensor, images: Tensor
    ) -> None:
        if self.images is not None:
            confidence = torch.cat([self.confidence, confidence])
            label_prob = torch.cat([self.label_prob, label_prob])
            labels = torch.cat([self.labels, labels])
            preds = torch.cat([self.preds, preds])
            images = torch.cat([self.images, images])
        keep = confidence.topk(min(self.num_images, len(confidence))).indices
        self.confidence, self.label_prob = confidence[keep], label_prob[keep]
        self.labels, self.preds, self.images = labels[keep], preds[keep], images[keep]

    def _gather(self, trainer: L.Trainer, tensor: Tensor) -> Tensor:
        if trainer.world_size == 1:
            return tensor
        return trainer.strategy.all_gather(tensor).reshape(-1, *tensor.shape[1:])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = pl_module.hparams.num_classes
        matrix = trainer.strategy.reduce(self.matrix, reduce_op="sum").view(n, n).cpu()
        if self.images is None:
            return self._finish(trainer, matrix, None)
        # all_gather needs equal shapes: every process pads to num_images candidates.
        pad = self.num_images - len(self.confidence)
        buffers = [
            torch.cat([t, torch.full((pad, *t.shape[1:]), fill, dtype=t.dtype, device=t.device)])
            for t, fill in (
                (self.confidence, -1),
                (self.label_prob, 0),
                (self.labels, 0),
                (self.preds, 0),
                (self.images, 0),
            )
        ]
        self._finish(trainer, matrix, [self._gather(trainer, t) for t in buffers])

    def _finish(self, trainer: L.Trainer, matrix: Tensor, gathered: list[Tensor] | None) -> None:
        if not trainer.is_global_zero:
            return
        classes = list(getattr(trainer.datamodule, "classes", None) or range(len(matrix)))
        classes = [str(c) for c in classes]
        path = run_directory(trainer) / "confusion_matrix.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["true\\predicted," + ",".join(classes)]
        lines += [
            f"{c}," + ",".join(map(str, row.tolist()))
            for c, row in zip(classes, matrix, strict=True)
        ]
        path.write_text("\n".join(lines) + "\n")
        for logger in _wandb_loggers(trainer):
            self._log_wandb(logger, trainer.global_step, matrix, classes, gathered)

    def _log_wandb(
        self,
        logger: WandbLogger,
        step: int,
        matrix: Tensor,
        classes: list[str],
        gathered: list[Tensor] | None,
    ) -> None:
        import wandb

        logged: dict[str, Any] = {}
        if len(classes) <= self.max_chart_classes:
            cells = [
                [classes[i], classes[j], int(matrix[i, j])]
                for i in range(len(classes))
                for j in range(len(classes))
            ]
            # The table wandb.plot.confusion_matrix builds, from counts instead of predictions.
            logged["test/confusion_matrix"] = wandb.plot_table(
                "wandb/confusion_matrix/v1",
                wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=cells),
                {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
                {"title": "Test confusion matrix"},
            )
        if gathered is not None:
            confidence, label_prob, labels, preds, images = (t.cpu() for t in gathered)
            order = [i for i in confidence.argsort(descending=True).tolist() if confidence[i] >= 0]
            rows = [
                [
                    wandb.Image(images[i].numpy()),
                    classes[labels[i]],
                    classes[preds[i]],
                    float(confidence[i]),
                    float(label_prob[i]),
                ]
                for i in order[: self.num_images]
            ]
            logged["test/worst_predictions"] = wandb.Table(
                columns=["image", "label", "prediction", "confidence", "label_probability"],
                data=rows,
            )
        logger.log_metrics(logged, step=step)


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """Where the ``save_last`` checkpoint callback writes ``last.ckpt``."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}.ckpt"
    return None


class NonFiniteLossError(RuntimeError):
    """Training diverged; the message names the step, the metric and the last good checkpoint."""


class StopOnNonFinite(Callback):
    """Stop at the first non-finite training loss, before any checkpoint can store it.

    Each step only updates a flag on the device (the step and value of the first
    non-finite loss), so training never waits for the device. The flag is read every
    ``every_n_steps`` steps, at the end of each epoch, and before every checkpoint is
    written: a diverged state is never saved and ``last.ckpt`` stays the last good one.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = every_n_steps
        self._first_step: Tensor | None = None  # -1 while every loss has been finite
        self._first_value: Tensor | None = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach().float()
        if self._first_step is None:
            self._first_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._first_value = torch.zeros((), device=loss.device)
        first = ~torch.isfinite(loss) & (self._first_step < 0)
        self._first_step = torch.where(first, trainer.global_step, self._first_step)
        self._first_value = torch.where(first, loss, self._first_value)
        if trainer.global_step % self.every_n_steps == 0:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if self._first_step is None or int(self._first_step) < 0:
            return
        last = last_checkpoint_path(trainer)
        kept = f"; the last good checkpoint is {last}" if last and last.exists() else ""
        raise NonFiniteLossError(
            f"train/loss is {float(self._first_value)} at step {int(self._first_step)} "
            f"(epoch {trainer.current_epoch}){kept}. Lower the learning rate, add "
            "gradient clipping (--trainer.gradient_clip_val 1.0) or use 32-bit precision"
        )


class SaveOnPreemption(Callback):
    """On SIGTERM (what a scheduler sends before preempting), save ``last.ckpt`` and stop.

    Lightning turns SIGTERM into an exception at the next step boundary on every rank;
    this saves the state of that step. Under SLURM the job then requeues itself, and the
    requeued job continues with ``--ckpt_path last``.
    """

    def __init__(self, requeue_on_slurm: bool = True) -> None:
        self.requeue_on_slurm = requeue_on_slurm
        self.saved_to: Path | None = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        path = last_checkpoint_path(trainer) or Path(trainer.default_root_dir) / "preempted.ckpt"
        trainer.save_checkpoint(path)
        self.saved_to = path
        exception.args = (
            f"stopped by SIGTERM at step {trainer.global_step}; saved {path}. "
            "Continue with the same command plus --ckpt_path last",
        )
        job = os.environ.get("SLURM_JOB_ID")
        if self.requeue_on_slurm and job and trainer.is_global_zero:
            subprocess.run(["scontrol", "requeue", job], check=False)
