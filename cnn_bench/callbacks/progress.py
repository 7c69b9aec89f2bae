"""The progress bar, redrawn without making training wait for the device."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, whose numbers are read only when they change.

    Lightning reads every ``prog_bar`` metric back from the device after every training
    batch, whether or not it changed, and each read waits for the step's kernels to
    finish. The training step logs only on the loggers' steps (every
    ``log_every_n_steps``) and at the end of the epoch, so this bar reads its numbers
    then, and between those steps moves its counter alone. ``train/loss`` is logged
    without ``prog_bar`` (which would make Lightning read it every batch) and shown
    from the callback metrics.
    """

    step_metrics = ("train/loss",)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        logged = trainer.callback_metrics
        return {**{k: float(logged[k]) for k in self.step_metrics if k in logged}, **items}

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.train_progress_bar_id is None and not self.is_disabled:
            self._initialize_train_progress_bar_id()  # a mid-epoch resume starts here
        self._update(self.train_progress_bar_id, batch_idx + 1)
        if trainer.global_step % trainer.log_every_n_steps == 0 or trainer.is_last_batch:
            self._update_metrics(trainer, pl_module)
        self.refresh()
