"""Time to accuracy: ``cnn-bench fit`` on the fast CIFAR-10 recipe within a wall-clock budget,
then the test set.

The budget is Lightning's ``max_time``, so the number is what a user gets from
``cnn-bench fit --config configs/experiment/fast_cifar10.yaml --trainer.max_time ...``.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Timer

from cnn_bench.cli import CONFIG_DIR, cli

FAST_CONFIG = CONFIG_DIR / "experiment" / "fast_cifar10.yaml"


def _duration(seconds: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` form of ``max_time``."""
    s = int(round(seconds))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def measure(budget_s: float, root: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_DIR", str(root))
    start = time.perf_counter()
    run = cli([
        "fit", "--config", str(FAST_CONFIG),
        "--trainer.max_time", _duration(budget_s),
        "--trainer.default_root_dir", str(root),
        *extra,
    ])
    fit_s = time.perf_counter() - start
    trainer = run.trainer
    (timer,) = [c for c in trainer.callbacks if isinstance(c, Timer)]
    train_s = timer.time_elapsed("train")
    epochs_done = trainer.current_epoch
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
        "max_epochs": trainer.max_epochs,
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
        "tta": False,
    }
