"""Framework overhead: ``cnn-bench fit`` against a hand-written PyTorch loop, interleaved.

Both train the same network on the same DataModule (CIFAR-10 in memory, augmented on the
device) with the same batch size, optimizer and schedule. The Lightning run is the real
``cnn-bench fit``: default callbacks, the progress bar and the W&B logger (offline) on;
only validation is off, because the hand-written loop has none. Each run is clocked
from the start of step ``warmup`` to the start of step ``steps``, so start-up (W&B, the
data read) is outside both windows and every per-step cost (logging, the progress bar,
metrics, the sampler, ``on_after_batch_transfer``) inside. Each window is read on the
wall clock (what a user waits) and as the process's CPU time, which other work on a
shared machine does not inflate: framework overhead is CPU work either way.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cnn_bench.bench.common import bench_device, clock, pinned_device_args, synchronize
from cnn_bench.cli import CONFIG_DIR, CNNBenchCLI, cli
from cnn_bench.data import augment
from cnn_bench.models import create_model
from cnn_bench.stats import median_range

DEFAULT_CONFIG = CONFIG_DIR / "experiment" / "lenet5_cifar10.yaml"
# The other end: a step of seconds on a CPU, where a fixed cost per step vanishes.
LARGE_CONFIG = CONFIG_DIR / "experiment" / "resnet18_cifar10.yaml"

# The parts of a training step as Lightning's SimpleProfiler names them (the strategy's
# class name varies: SingleDeviceStrategy, DDPStrategy).
STEP_PARTS = {
    "data: next batch": "[_TrainingEpochLoop].train_dataloader_next",
    "to the device and augmentation": "Strategy.batch_to_device",
    "training_step: forward, loss, accuracy": "Strategy.training_step",
    "backward": "Strategy.backward",
    "optimizer step, zero_grad, schedule": None,  # optimizer_step less the two above
}


Seconds = tuple[float, float]  # wall, CPU


class StepClock(L.Callback):
    """Wall and CPU time from the start of training step ``first`` to the start of ``last``."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.start: Seconds | None = None
        self.stop: Seconds | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx in (self.first, self.last):
            synchronize(pl_module.device)
            if batch_idx == self.first:
                self.start = clock()
            else:
                self.stop = clock()

    @property
    def seconds(self) -> Seconds:
        if self.start is None or self.stop is None:
            raise RuntimeError(f"training ended before step {self.last}; lower the step count")
        return self.stop[0] - self.start[0], self.stop[1] - self.start[1]


def lightning_run(
    config: Path, steps: int, warmup: int, root: Path, extra: tuple[str, ...] = ()
) -> tuple[Seconds, CNNBenchCLI]:
    """Wall and CPU seconds of steps ``warmup..steps-1`` under ``cnn-bench fit``, and its CLI."""
    timer_spec = json.dumps(
        {
            "class_path": f"{__name__}.StepClock",
            "init_args": {"first": warmup, "last": steps},
        }
    )
    run = cli(
        [
            "fit",
            "--config",
            str(config),
            "--trainer.max_steps",
            str(steps + 1),
            "--trainer.limit_val_batches",
            "0",
            "--trainer.default_root_dir",
            str(root),
            *pinned_device_args(),
            *extra,
            f"--trainer.callbacks+={timer_spec}",
        ]
    )
    (timer,) = [c for c in run.trainer.callbacks if isinstance(c, StepClock)]
    import wandb

    wandb.finish()  # the next run starts its own W&B run, as a new `cnn-bench fit` would
    return timer.seconds, run


def _label(callback: L.Callback) -> str:
    name = type(callback).__name__
    if name == "ModelCheckpoint":
        monitor = getattr(callback, "monitor", None)
        every = getattr(callback, "_every_n_train_steps", 0)
        return f"{name} (best {monitor})" if monitor else f"{name} (every {every} steps)"
    return name


def step_costs(
    config: Path, steps: int, warmup: int, root: Path, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Microseconds per training step in each callback's hooks and in each part of the
    step, from Lightning's SimpleProfiler over the same timed steps of one more run.

    What the profiler records for an empty block is taken off each hook; its cost outside
    the blocks it times still slows the step, which is longer than in the timed pairs.
    What is left after the parts and the callbacks is Lightning's loop itself (progress
    counters, logging, hook dispatch, the profiler).
    """
    (wall, _), run = lightning_run(
        config, steps, warmup, root, ("--trainer.profiler", "simple", *extra)
    )
    import wandb

    wandb.finish()
    timed = steps - warmup
    labels = {cb.state_key: _label(cb) for cb in run.trainer.callbacks}
    # What the profiler itself adds to each hook it records (its context manager, the
    # clock), measured on an empty block: taken off every recorded hook.
    empty = _empty_record_seconds()
    per_step: dict[str, float] = {}
    for action, times in run.trainer.profiler.recorded_durations.items():
        if len(times) >= steps:  # once per step: per-epoch hooks are not step costs
            cost = sum(max(0.0, t - empty) for t in times[warmup:steps])
            per_step[action] = cost / timed * 1e6
    callbacks: dict[str, float] = defaultdict(float)
    for action, us in per_step.items():
        if action.startswith("[Callback]"):
            key = action.removeprefix("[Callback]").rsplit(".", 1)[0]
            callbacks[labels.get(key, key)] += us

    def part(suffix: str) -> float:
        return sum(us for action, us in per_step.items() if action.endswith(suffix))

    parts = {name: part(suffix) for name, suffix in STEP_PARTS.items() if suffix}
    batch = per_step.get("run_training_batch", 0.0)  # forward, backward and optimizer step
    forward_backward = parts["training_step: forward, loss, accuracy"] + parts["backward"]
    parts["optimizer step, zero_grad, schedule"] = batch - forward_backward
    step_us = wall / timed * 1e6
    parts["callbacks (below)"] = sum(callbacks.values())
    parts["the rest: Lightning's loop, logging"] = step_us - sum(parts.values())
    return {
        "step_us": step_us,
        "parts_us": parts,
        "callbacks_us": dict(sorted(callbacks.items(), key=lambda kv: -kv[1])),
        "profiler": "lightning SimpleProfiler",
        "profiler_record_us": empty * 1e6,
    }


def _empty_record_seconds(n: int = 2000) -> float:
    """The median duration SimpleProfiler records for a block that does nothing."""
    from lightning.pytorch.profilers import SimpleProfiler

    profiler = SimpleProfiler()
    for _ in range(n):
        with profiler.profile("empty"):
            pass
    return float(torch.tensor(profiler.recorded_durations["empty"]).median())


def plain_run(run: CNNBenchCLI, steps: int, warmup: int) -> Seconds:
    """The same training written by hand: the Lightning run's data, optimizer and schedule."""
    device = bench_device()
    hp = run.model.hparams
    data = run.datamodule
    torch.manual_seed(0)
    model = create_model(
        hp.arch,
        num_classes=hp.num_classes,
        in_chans=hp.in_chans,
        image_size=hp.image_size,
        **(hp.arch_kwargs or {}),
    ).to(device)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    optimizer = run.model.optimizer(model.parameters())
    schedule = None
    if run.model.lr_scheduler is not None:
        schedule = run.model.lr_scheduler(optimizer, total_steps=steps + 1)
    generator = torch.Generator(device).manual_seed(0)
    mean, std = data.mean.to(device), data.std.to(device)
    start = (0.0, 0.0)
    for step, (images, labels) in enumerate(data.train_dataloader()):
        if step in (warmup, steps):
            synchronize(device)
            if step == steps:
                stop = clock()
                return stop[0] - start[0], stop[1] - start[1]
            start = clock()
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
    rates: dict[str, list[float]] = {
        k: [] for k in ("lightning", "plain", "lightning_cpu", "plain_cpu")
    }
    for i in range(repeats):
        seconds, run = lightning_run(config, steps, warmup, root / f"lightning{i}")
        images = timed * run.datamodule.batch_size
        plain = plain_run(run, steps, warmup)
        for name, (wall, cpu) in (("lightning", seconds), ("plain", plain)):
            rates[name].append(images / wall)
            rates[f"{name}_cpu"].append(images / cpu)
    ratios = [a / b for a, b in zip(rates["lightning"], rates["plain"], strict=True)]
    cpu_ratios = [a / b for a, b in zip(rates["lightning_cpu"], rates["plain_cpu"], strict=True)]
    root_dir = CONFIG_DIR.parent
    return {
        "config": str(config.relative_to(root_dir) if config.is_relative_to(root_dir) else config),
        "arch": run.model.hparams.arch,
        "batch_size": run.datamodule.batch_size,
        "steps_timed": timed,
        "warmup_steps": warmup,
        "repeats": repeats,
        "device": str(bench_device()),
        "precision": str(run.trainer.precision),
        "lightning_images_per_s": median_range(rates["lightning"]),
        "plain_images_per_s": median_range(rates["plain"]),
        "ratio": median_range(ratios),
        "ratios": ratios,
        # Images per CPU-second of the process: the same comparison, blind to other work.
        "lightning_images_per_cpu_s": median_range(rates["lightning_cpu"]),
        "plain_images_per_cpu_s": median_range(rates["plain_cpu"]),
        "cpu_ratio": median_range(cpu_ratios),
        "target": 0.97,
    }
