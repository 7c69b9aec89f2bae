"""The callbacks of every run, each under its own name, the LightningCLI way.

Each is a group of options (``--checkpoint.every_n_train_steps 100``, or ``checkpoint:``
in a YAML file) whose values ``configs/trainer/default.yaml`` sets, so a later config can
change one callback and keep the others; ``--trainer.callbacks+=...`` adds more. A list
of callbacks could only be replaced as a whole, dropping the others without a word.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.callbacks.progress import ProgressBar as AnyProgressBar
from lightning.pytorch.cli import LightningArgumentParser

from cnn_bench.callbacks import (
    BatchNormTestMode,
    PredictionWriter,
    ProgressBar,
    RunSummary,
    SaveLastOnEnd,
    SaveOnPreemption,
    StopOnNonFinite,
    TestPredictions,
    Throughput,
)

# In the order they run. The best checkpoint comes first: it is the trainer's
# ``checkpoint_callback`` that fit's summary and --test_after_fit read. RunSummary reads
# the throughput logged in the same epoch-end hook, so it comes after Throughput.
# SaveLastOnEnd and SaveOnPreemption (on SIGTERM, every process at the same step) are
# last: their saves inside a step must come after every other callback has counted that
# step (RunSummary's running loss is in the checkpoint). Callbacks added with
# --trainer.callbacks run before all of these.
DEFAULT_CALLBACKS: dict[str, type[Callback]] = {
    "best_checkpoint": ModelCheckpoint,
    "checkpoint": ModelCheckpoint,
    "stop_on_non_finite": StopOnNonFinite,
    "lr_monitor": LearningRateMonitor,
    "progress_bar": ProgressBar,
    "throughput": Throughput,
    "run_summary": RunSummary,
    "bn_test": BatchNormTestMode,
    "test_predictions": TestPredictions,
    "prediction_writer": PredictionWriter,
    "save_last_on_end": SaveLastOnEnd,
    "save_on_preemption": SaveOnPreemption,
}


def add_default_callbacks(parser: LightningArgumentParser) -> None:
    for key, callback in DEFAULT_CALLBACKS.items():
        parser.add_lightning_class_args(callback, key)


def switched_off(trainer: Any) -> tuple[type[Callback], ...]:
    """Callbacks that would contradict a trainer switch turned off: the switch wins (a
    progress bar with ``enable_progress_bar false`` is an error in Lightning)."""
    off: list[type[Callback]] = []
    if trainer.get("enable_progress_bar") is False:
        off.append(AnyProgressBar)
    if trainer.get("logger") in (False, None):
        off.append(LearningRateMonitor)
    if trainer.get("enable_checkpointing") is False:
        off.append(ModelCheckpoint)
    return tuple(off)
