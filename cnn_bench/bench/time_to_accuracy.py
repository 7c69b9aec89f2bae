"""Time to accuracy: ``cnn-bench fit`` on the fast CIFAR-10 recipe within a wall-clock budget,
then the test set.

The budget is Lightning's ``max_time``, so the number is what a user gets from
``cnn-bench fit --config configs/experiment/fast_cifar10.yaml --trainer.max_time ...``.
A schedule cut off by ``max_time`` stops at a high learning rate, far from its best
accuracy; so a few training steps first measure this machine's speed, and ``max_steps``
is set to what fits the budget, so the one-cycle schedule anneals to its end in time
(linear decay to the budget is the best schedule under a fixed budget: Li, Yumer and
Ramanan, "Budgeted Training", ICLR 2020).
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Timer

from cnn_bench.bench.common import bench_device, images_per_second, pinned_device_args
from cnn_bench.bench.throughput import train_step
from cnn_bench.cli import CONFIG_DIR, cli, resolved_config
from cnn_bench.data.cifar10 import CIFAR10DataModule
from cnn_bench.models import create_model

FAST_CONFIG = CONFIG_DIR / "experiment" / "fast_cifar10.yaml"
# Of the budget, the share planned for training steps: validation each epoch, the
# logger and a machine whose speed varies take the rest (max_time is the hard limit).
TRAINING_SHARE = 0.8


def _duration(seconds: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` form of ``max_time``."""
    s = int(round(seconds))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def steps_in_budget(budget_s: float) -> tuple[int, float]:
    """Training steps of the fast recipe that fit ``budget_s`` here, and the images/s seen."""
    config = resolved_config(["--config", str(FAST_CONFIG)])
    model_cfg, batch = config["model"], config["data"]["init_args"]["batch_size"]
    model = create_model(
        model_cfg["arch"],
        num_classes=CIFAR10DataModule.num_classes,
        image_size=32,
        **(model_cfg.get("arch_kwargs") or {}),
    ).to(bench_device())
    precision = config.get("trainer", {}).get("precision", "32-true")
    step = train_step(model, precision, batch, 32, channels_last=False, device=bench_device())
    rate, _ = images_per_second(step, batch, bench_device(), warmup=1, min_steps=3, min_seconds=5.0)
    return max(1, int(TRAINING_SHARE * budget_s * rate / batch)), rate


def measure(budget_s: float, root: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train within ``budget_s``; ``extra`` CLI arguments replace the planned step count."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_DIR", str(root))
    planned: dict[str, Any] = {}
    if not extra:
        steps, rate = steps_in_budget(budget_s)
        planned = {"planned_steps": steps, "calibration_images_per_s": rate}
        extra = ("--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1")
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
        **planned,
    }
