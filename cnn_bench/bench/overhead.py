"""Framework overhead: ``cnn-bench fit`` against a hand-written PyTorch loop, interleaved.

Both train the same network on the same DataModule (CIFAR-10 in memory, augmented on the
device) with the same batch size, optimizer and schedule. The Lightning run is the real
``cnn-bench fit``: default callbacks, the progress bar and the W&B logger (offline) on;
only validation is off, because the hand-written loop has none. Each run is clocked
from the start of step ``warmup`` to the start of step ``steps``, so start-up (W&B, the
data read) is outside both windows and every per-step cost (logging, the progress bar,
metrics, the sampler, ``on_after_batch_transfer``) inside.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cnn_bench.bench.common import bench_device, spread, synchronize
from cnn_bench.cli import CONFIG_DIR, CNNBenchCLI, cli
from cnn_bench.data import augment
from cnn_bench.models import create_model

DEFAULT_CONFIG = CONFIG_DIR / "experiment" / "lenet5_cifar10.yaml"


class StepClock(L.Callback):
    """Wall time from the start of training step ``first`` to the start of step ``last``."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.start = self.stop = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx in (self.first, self.last):
            synchronize(pl_module.device)
            now = time.perf_counter()
            if batch_idx == self.first:
                self.start = now
            else:
                self.stop = now

    @property
    def seconds(self) -> float:
        if not self.stop:
            raise RuntimeError(f"training ended before step {self.last}; lower the step count")
        return self.stop - self.start


def lightning_run(
    config: Path, steps: int, warmup: int, root: Path, extra: tuple[str, ...] = ()
) -> tuple[float, CNNBenchCLI]:
    """Seconds for steps ``warmup..steps-1`` under ``cnn-bench fit``, and the CLI it built."""
    clock = json.dumps({
        "class_path": f"{__name__}.StepClock", "init_args": {"first": warmup, "last": steps},
    })
    run = cli([
        "fit", "--config", str(config),
        "--trainer.max_steps", str(steps + 1),
        "--trainer.limit_val_batches", "0",
        "--trainer.default_root_dir", str(root),
        *extra,
        f"--trainer.callbacks+={clock}",
    ])
    (timer,) = [c for c in run.trainer.callbacks if isinstance(c, StepClock)]
    import wandb

    wandb.finish()  # the next run starts its own W&B run, as a new `cnn-bench fit` would
    return timer.seconds, run


def plain_run(run: CNNBenchCLI, steps: int, warmup: int) -> float:
    """The same training written by hand: the Lightning run's data, optimizer and schedule."""
    device = bench_device()
    hp = run.model.hparams
    data = run.datamodule
    torch.manual_seed(0)
    model = create_model(
        hp.arch, num_classes=hp.num_classes, in_chans=hp.in_chans, image_size=hp.image_size,
        **(hp.arch_kwargs or {}),
    ).to(device)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    optimizer = run.model.optimizer(model.parameters())
    schedule = None
    if run.model.lr_scheduler is not None:
        schedule = run.model.lr_scheduler(optimizer, total_steps=steps + 1)
    generator = torch.Generator(device).manual_seed(0)
    mean, std = data.mean.to(device), data.std.to(device)
    start = 0.0
    for step, (images, labels) in enumerate(data.train_dataloader()):
        if step in (warmup, steps):
            synchronize(device)
            if step == steps:
                return time.perf_counter() - start
            start = time.perf_counter()
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        images = augment.normalize(data.augment(images, generator), mean, std)
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
    raise RuntimeError(f"one epoch has fewer than {steps} steps; lower the step count")


def measure(config: Path, steps: int, warmup: int, repeats: int, root: Path) -> dict[str, Any]:
    """Interleave Lightning and hand-written runs (A B A B ...) and compare images/s."""
    os.environ.setdefault("WANDB_MODE", "offline")  # a benchmark never uploads
    os.environ.setdefault("WANDB_DIR", str(root))
    timed = steps - warmup
    lightning_ips, plain_ips, ratios = [], [], []
    batch_size = 0
    for i in range(repeats):
        seconds, run = lightning_run(config, steps, warmup, root / f"lightning{i}")
        batch_size = run.datamodule.batch_size
        lightning_ips.append(timed * batch_size / seconds)
        plain_ips.append(timed * batch_size / plain_run(run, steps, warmup))
        ratios.append(lightning_ips[-1] / plain_ips[-1])
    return {
        "config": str(config.relative_to(CONFIG_DIR.parent) if config.is_relative_to(
            CONFIG_DIR.parent) else config),
        "arch": run.model.hparams.arch,
        "batch_size": batch_size,
        "steps_timed": timed,
        "warmup_steps": warmup,
        "repeats": repeats,
        "device": str(bench_device()),
        "precision": str(run.trainer.precision),
        "lightning_images_per_s": spread(lightning_ips),
        "plain_images_per_s": spread(plain_ips),
        "ratio": spread(ratios),
        "ratios": ratios,
        "target": 0.97,
    }
