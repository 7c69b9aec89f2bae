"""Never lose a run's work: stop before a diverged state is saved, save on preemption,
save the last step however a run ends.

``StopOnNonFinite`` stops at the first non-finite loss before it is checkpointed;
``SaveOnPreemption`` saves ``last.ckpt`` on SIGTERM; ``SaveLastOnEnd`` saves it when fit ends.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from cnn_bench import sigterm
from cnn_bench.runs import last_checkpoint_path

NEVER = torch.iinfo(torch.long).max  # the step of a loss that was never non-finite


class NonFiniteLossError(RuntimeError):
    """Training diverged; the message names the step, the metric and the last good checkpoint."""


class StopOnNonFinite(Callback):
    """Stop at the first non-finite training loss, before any checkpoint can store it.

    Each step keeps its loss (a reference, no copy and no read-back), so training never
    waits for the device. The kept losses are read every ``every_n_steps`` steps, at the
    end of each epoch, and before every checkpoint is written: a diverged state is never
    saved and ``last.ckpt`` stays the last good one.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = every_n_steps
        self._losses: list[Tensor] = []  # since the last check
        self._steps: list[int] = []  # the global step of each of them
        self._most = 4 * max(1, every_n_steps)

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
        self._losses.append(loss.detach())
        self._steps.append(trainer.global_step)
        # Accumulated gradients hold the step count: the list is bounded between checks too.
        if trainer.global_step % self.every_n_steps == 0 or len(self._steps) >= self._most:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._check(trainer)

    def _first_non_finite(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The step and the value of the first non-finite loss since the last check
        (step ``NEVER`` when there was none); the list starts again."""
        losses, steps = self._losses, self._steps
        self._losses, self._steps = [], []
        if not losses:
            return torch.tensor(NEVER, device=device), torch.zeros((), device=device)
        seen = torch.stack(losses).float()
        bad = ~torch.isfinite(seen)
        first = bad.to(torch.uint8).argmax()  # the first True, or 0 when there is none
        step = torch.where(bad.any(), torch.tensor(steps, device=device)[first], NEVER)
        return step, seen[first]

    def _check(self, trainer: L.Trainer) -> None:
        step, value = self._first_non_finite(trainer.strategy.root_device)
        if trainer.world_size > 1:
            # Every process stops, or none: one stopping alone would leave the others
            # waiting in a collective forever. The first step over all processes, and
            # the loss seen there (the other processes contribute nothing).
            first = trainer.strategy.reduce(step, reduce_op="min")
            here = (step == first) & (first != NEVER)
            value = trainer.strategy.reduce(torch.where(here, value, 0.0), reduce_op="sum")
            step = first
        if int(step) == NEVER:
            return
        last = last_checkpoint_path(trainer)
        kept = f"; the last good checkpoint is {last}" if last and last.exists() else ""
        raise NonFiniteLossError(
            f"train/loss is {float(value)} at step {int(step)} "
            f"(epoch {trainer.current_epoch}){kept}. Lower the learning rate, add "
            "gradient clipping (--trainer.gradient_clip_val 1.0) or use 32-bit precision"
        )


class SaveLastOnEnd(Callback):
    """However fit ends (``max_epochs``, ``max_steps`` in the middle of an epoch, ``max_time``,
    early stopping), ``last.ckpt`` is its last step.

    Lightning's ``ModelCheckpoint`` writes ``last.ckpt`` only together with another
    checkpoint of the same step, and at the end of fit only if it never wrote one: a run
    stopped by ``max_steps`` 100 steps after the last periodic save lost those steps, and
    an epoch that did not improve the monitored metric was not saved at all. A run that
    ends in an exception does not come here: a non-finite loss keeps the last good
    checkpoint (``StopOnNonFinite``), SIGTERM saves its own (``SaveOnPreemption``).

    Stopped by ``max_steps`` inside an epoch, the state is taken at that step, in the middle
    of the epoch, which a longer run resumes exactly; once the loop has ended Lightning
    counts the epoch as done, and a longer run would never train the rest of it. Lightning's
    own ``ModelCheckpoint`` may still write that later state at the end of training, so
    the step's checkpoint is kept aside and moved over ``last.ckpt`` when fit ends.
    """

    def __init__(self) -> None:
        self._mid_epoch: Path | None = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step != trainer.max_steps:  # the cheap test first: every step
            return
        path = _final_path(trainer)
        epoch_done = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if path and not epoch_done:
            self._mid_epoch = path.with_name(f".{path.stem}-mid-epoch.ckpt")
            trainer.save_checkpoint(self._mid_epoch)  # through the (atomic) checkpoint IO

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = _final_path(trainer)
        if path and self._mid_epoch is None:
            trainer.save_checkpoint(path)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = _final_path(trainer)
        if path and self._mid_epoch is not None and trainer.is_global_zero:
            os.replace(self._mid_epoch, path)  # only rank zero writes checkpoint files
        self._mid_epoch = None


def _final_path(trainer: L.Trainer) -> Path | None:
    """Where the final ``last.ckpt`` goes; None when there is nothing to save."""
    if trainer.fast_dev_run or trainer.global_step == 0:
        return None
    return last_checkpoint_path(trainer)


class SaveOnPreemption(Callback):
    """On SIGTERM (what a scheduler sends before preempting), save ``last.ckpt`` and stop,
    on every process at the same step.

    Lightning's own handler is not used in training: it broadcasts from inside the signal
    handler, and a process signalled alone stops alone. Under DDP the signals reach the
    processes at different times (SLURM gives no order), so that process leaves the
    others waiting in a collective forever, with no checkpoint (two gloo processes under
    ``torchrun`` hung so). Here the handler only sets a flag. Every ``every_n_steps``
    steps every process enters one reduction of the flags, at the same step; when any
    process was signalled, all of them save that step's state together and stop. A
    single process reads its flag at every step and needs no collective.

    This is kept rather than Lightning's ``OnExceptionCheckpoint`` plus its SLURM
    auto-requeue: ``OnExceptionCheckpoint`` saves from ``on_exception``, which a process
    that was never signalled does not reach (it waits in the collective), and Lightning's
    requeue runs on SIGUSR1 inside the handler, with the same broadcast. Under SLURM the
    job then requeues itself, and the requeued job continues with ``--ckpt_path last``.

    Last in the callback list: the state is saved after every other callback has counted
    the step, as the periodic ``last.ckpt`` is, so the resume is exact.
    """

    def __init__(self, requeue_on_slurm: bool = True, every_n_steps: int = 10) -> None:
        self.requeue_on_slurm = requeue_on_slurm
        self.every_n_steps = every_n_steps
        self.saved_to: Path | None = None
        self._signalled = False

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = True  # nothing else here: a collective in a handler can hang

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_sigterm()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_sigterm()

    def _take_sigterm(self) -> None:
        # Replaces the handler Lightning has just installed for this fit; Lightning puts
        # the previous one (cnn_bench.sigterm's) back when fit ends.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._note)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.world_size > 1:
            if trainer.global_step % self.every_n_steps:
                return
            flag = torch.tensor(float(self._signalled), device=pl_module.device)
            if not float(trainer.strategy.reduce(flag, reduce_op="sum")):
                return
        elif not self._signalled:
            return
        self._save(trainer)
        raise SIGTERMException(self._message(trainer))

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # SIGTERM that Lightning turned into an exception outside the steps this callback
        # sees (in validation, at an epoch's end): every process stops there together.
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        if self.saved_to is None:
            self._save(trainer)
            exception.args = (self._message(trainer),)
        if self.requeue_on_slurm and trainer.is_global_zero:
            sigterm.requeue_on_slurm()

    def _save(self, trainer: L.Trainer) -> None:
        path = last_checkpoint_path(trainer) or Path(trainer.default_root_dir) / "preempted.ckpt"
        trainer.save_checkpoint(path)
        self.saved_to = path

    def _message(self, trainer: L.Trainer) -> str:
        return (
            f"stopped by SIGTERM at step {trainer.global_step}; saved {self.saved_to}. "
            "Continue with the same command plus --ckpt_path last"
        )
