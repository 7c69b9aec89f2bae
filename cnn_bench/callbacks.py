"""Callbacks that keep a run's record and never lose its work: the resolved config next to
the checkpoints, a stop at the first non-finite loss, a checkpoint on preemption."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException


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
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(
                    {"cli": self.config.clone().as_dict()}, allow_val_change=True
                )
                logger.experiment.save(str(path), base_path=str(run_dir), policy="now")


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

    Checkpoint callbacks run after all others, so the step that diverged is never saved
    and ``last.ckpt`` stays the last good state. Checking reads the loss on the host,
    a device sync every ``every_n_steps`` steps.
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            last = last_checkpoint_path(trainer)
            kept = f"; the last good checkpoint is {last}" if last and last.exists() else ""
            raise NonFiniteLossError(
                f"train/loss is {loss.item()} at step {trainer.global_step} "
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
