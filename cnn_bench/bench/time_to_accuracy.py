"""Time to accuracy: ``cnn-bench fit`` on the fast CIFAR-10 recipe within a wall-clock budget,
then the test set.

The budget is Lightning's ``max_time``, so the number is what a user gets from
``cnn-bench fit --config configs/experiment/fast_cifar10.yaml --trainer.max_time ...``.
A schedule cut off by ``max_time`` stops at a high learning rate, far from its best
accuracy; so a short ``cnn-bench fit`` of the same recipe first measures this machine's
speed, and ``max_steps`` is set to what fits the budget, so the one-cycle schedule
anneals to its end in time (linear decay to the budget is the best schedule under a
fixed budget: Li, Yumer and Ramanan, "Budgeted Training", ICLR 2020). The speed is the
Lightning run's, loop, callbacks, logging and data pipeline included: a bare training
loop leaves those out, and on a GPU, where this small network's step takes
milliseconds, they can be a large part of each step, so a plan made from it can overrun
the budget and have ``max_time`` cut the schedule.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, Timer

from cnn_bench.bench.common import pinned_device_args, synchronize
from cnn_bench.cli import CONFIG_DIR, cli
from cnn_bench.stats import mean_interval, median_range

FAST_CONFIG = CONFIG_DIR / "experiment" / "fast_cifar10.yaml"
# Of the budget, the share planned for training steps: validation each epoch, the
# logger and a machine whose speed varies take the rest (max_time is the hard limit).
TRAINING_SHARE = 0.8
# The calibration run: steps timed, after steps left out (the first pays for allocation,
# cuDNN's algorithm search and the loader's start).
CALIBRATION_WARMUP, CALIBRATION_STEPS = 3, 10


def _duration(seconds: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` form of ``max_time``."""
    s = int(round(seconds))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


class _StepClock(Callback):
    """The time at the end of each training step (the device's queue drained first)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(pl_module.device)
        self.times.append(time.perf_counter())


def steps_in_budget(budget_s: float, root: Path) -> tuple[int, float]:
    """Training steps of the fast recipe that fit ``budget_s`` here, and the images/s seen
    in a short ``cnn-bench fit`` of it (its first steps, which warm up, left out)."""
    run = cli(
        [
            "--config",
            str(FAST_CONFIG),
            "--trainer.max_steps",
            str(CALIBRATION_WARMUP + CALIBRATION_STEPS),
            "--trainer.max_epochs",
            "-1",
            "--trainer.limit_val_batches",
            "0",
            "--trainer.logger",
            "false",
            "--trainer.default_root_dir",
            str(root / "calibration"),
            *pinned_device_args(),
        ],
        run=False,
    )
    step_clock = _StepClock()
    run.trainer.callbacks.append(step_clock)
    run.trainer.fit(run.model, datamodule=run.datamodule)
    times = step_clock.times[CALIBRATION_WARMUP - 1 :]
    rate = (len(times) - 1) * run.datamodule.batch_size / (times[-1] - times[0])
    return max(1, int(TRAINING_SHARE * budget_s * rate / run.datamodule.batch_size)), rate


def measure(
    budget_s: float, root: Path, extra: tuple[str, ...] = (), seeds: tuple[int, ...] = (0,)
) -> dict[str, Any]:
    """Train within ``budget_s`` once per seed (the step count planned once, so every seed
    trains the same schedule); ``extra`` CLI arguments replace the planned step count.
    The first seed's run gives the top-level numbers; ``over_seeds`` the mean and spread."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_DIR", str(root))
    planned: dict[str, Any] = {}
    if not extra:
        steps, rate = steps_in_budget(budget_s, root)
        planned = {"planned_steps": steps, "calibration_images_per_s": rate}
        extra = ("--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1")
    runs = [
        _run(budget_s, root / f"seed{seed}", (*extra, "--seed_everything", str(seed)))
        for seed in seeds
    ]
    result = {**runs[0], **planned, "seeds": list(seeds)}
    if len(runs) > 1:
        keys = ("test_acc1", "test_tta_acc1", "train_s", "epochs")
        result["runs"] = runs
        result["over_seeds"] = {
            key: mean_interval([r[key] for r in runs]) | median_range([r[key] for r in runs])
            for key in keys
            if all(r.get(key) is not None for r in runs)
        }
    return result


def _run(budget_s: float, root: Path, extra: tuple[str, ...]) -> dict[str, Any]:
    """One ``cnn-bench fit`` of the fast recipe within ``budget_s``, then its test."""
    start = time.perf_counter()
    run = cli(
        [
            "fit",
            "--config",
            str(FAST_CONFIG),
            "--trainer.max_time",
            _duration(budget_s),
            "--trainer.default_root_dir",
            str(root),
            *pinned_device_args(),
            *extra,
        ]
    )
    fit_s = time.perf_counter() - start
    trainer = run.trainer
    (timer,) = [c for c in trainer.callbacks if isinstance(c, Timer)]
    train_s = timer.time_elapsed("train")
    epochs_done = trainer.global_step / trainer.num_training_batches  # fractional
    steps = trainer.global_step
    val_acc = trainer.callback_metrics.get("val/acc1")
    (tested,) = trainer.test(run.model, datamodule=run.datamodule, verbose=False)
    import wandb

    wandb.finish()
    hp = run.model.hparams
    return {
        "config": str(FAST_CONFIG.relative_to(CONFIG_DIR.parent)),
        "arch": hp.arch,
        "arch_kwargs": hp.arch_kwargs,
        "batch_size": run.datamodule.batch_size,
        "budget_s": budget_s,
        "train_s": train_s,
        "fit_wall_s": fit_s,
        "stopped_by_budget": train_s >= timedelta(seconds=budget_s).total_seconds() - 1,
        "epochs": epochs_done,
        "steps": steps,
        "images_per_s": steps * run.datamodule.batch_size / train_s if train_s else None,
        "val_acc1": float(val_acc) if val_acc is not None else None,
        "test_acc1": tested["test/acc1"],
        "test_acc5": tested["test/acc5"],
        "tta": run.model.tta is not None,
        "test_tta_acc1": tested.get("test/tta_acc1"),
    }
