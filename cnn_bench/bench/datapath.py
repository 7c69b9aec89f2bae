"""The data path: images/s the DataModules deliver, against what a network consumes.

Three numbers for CIFAR-10 on one machine: ``CIFAR10DataModule``'s training loader with
its augmentation on the device (what ``cnn-bench fit`` runs), torchvision's per-image
PIL pipeline over the same uint8 arrays in DataLoader workers, and the images/s a
ResNet-18 training step consumes. The data path is never the bottleneck when the first
is far above the third.

Each pipeline is read on the wall clock and per CPU-second, summed over the main process
and the pipeline's own DataLoader workers. The PIL pipeline's wall-clock speed is its
workers' share of the cores: on 2 cores with anything else running it halves, while the
DataModule, one process, barely moves; per CPU-second, each is measured by the work it
does, and the ratio holds still.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cnn_bench.bench.common import bench_device, child_pids, images_per_second, rates
from cnn_bench.bench.throughput import train_step
from cnn_bench.data import CIFAR10DataModule, augment
from cnn_bench.models import create_model
from cnn_bench.stats import median_range


def _forever(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


class PILCIFAR10(Dataset):
    """torchvision's ``CIFAR10`` dataset over arrays in memory: one PIL image per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy()  # HWC, as torchvision stores them
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(np.ascontiguousarray(self.images[i]))), self.labels[i]


Pipeline = tuple[Callable[[], None], set[int]]  # one batch; the worker processes it uses


def datamodule_step(data: CIFAR10DataModule) -> Pipeline:
    """One training batch from the DataModule's loader, moved to the device, augmented there."""
    before = child_pids()
    device = bench_device()
    generator = torch.Generator(device).manual_seed(0)
    mean, std = data.mean.to(device), data.std.to(device)
    batches = _forever(data.train_dataloader())

    def step() -> None:
        images, labels = next(batches)
        images = images.to(device, non_blocking=True)
        augment.normalize(data.augment(images, generator), mean, std)
        labels.to(device, non_blocking=True)

    step()
    return step, child_pids() - before


def pil_step(data: CIFAR10DataModule, workers: int) -> Pipeline:
    """One batch of torchvision's classic pipeline: RandomCrop, RandomHorizontalFlip, ToTensor,
    Normalize, one image at a time in ``workers`` DataLoader worker processes."""
    from torchvision import transforms as T

    transform = T.Compose(
        [
            T.RandomCrop(32, padding=data.hparams.crop_padding),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((data.mean / 255).tolist(), (data.std / 255).tolist()),
        ]
    )
    train = data.datasets["train"]
    device = bench_device()
    before = child_pids()
    loader = DataLoader(
        PILCIFAR10(train.images, train.labels, transform),
        batch_size=data.batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )
    batches = _forever(loader)

    def step() -> None:
        images, labels = next(batches)
        images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    # The workers' start-up, which a long run pays once, stays out of the timed steps.
    for _ in range(2 * max(workers, 1)):
        step()
    return step, child_pids() - before


def training_rate(arch: str, batch_size: int, min_seconds: float) -> float:
    """Images/s a network consumes in SGD training steps on random CIFAR-sized batches."""
    device = bench_device()
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, image_size=32).to(device)
    step = train_step(model, "32-true", batch_size, 32, channels_last=False, device=device)
    return images_per_second(
        step, batch_size, device, warmup=1, min_steps=2, min_seconds=min_seconds
    )[0]


def measure(
    data_dir: str | None,
    batch_size: int,
    consumer: str,
    min_seconds: float,
    repeats: int,
    workers: int | None = None,
) -> dict[str, Any]:
    """Median images/s of ``repeats`` interleaved measurements of each CIFAR-10 pipeline."""
    data = CIFAR10DataModule(data_dir=data_dir, batch_size=batch_size)
    data.prepare_data()
    data.setup("fit")
    if workers is None:
        workers = os.cpu_count() or 1
    device = bench_device()
    pipelines = {"datamodule": datamodule_step(data), "pil": pil_step(data, workers)}
    wall: dict[str, list[float]] = {name: [] for name in pipelines}
    cpu: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(repeats):  # interleaved, so a busy moment of the machine hits both
        for name, (step, pids) in pipelines.items():
            made_ahead = 2 * len(pids)  # DataLoader's prefetch_factor, per worker
            per_s, per_cpu_s = rates(
                step, batch_size, device, pids, min_seconds=min_seconds, warmup=1 + made_ahead
            )
            wall[name].append(per_s)
            cpu[name].append(per_cpu_s)
    ours, pil = (statistics.median(wall[name]) for name in pipelines)
    ratios = [a / b for a, b in zip(wall["datamodule"], wall["pil"], strict=True)]
    cpu_ratios = [a / b for a, b in zip(cpu["datamodule"], cpu["pil"], strict=True)]
    consumed = training_rate(consumer, batch_size, min_seconds)
    return {
        "batch_size": batch_size,
        "device": str(bench_device()),
        "cifar10": {
            "datamodule_images_per_s": ours,
            "pil_pipeline_images_per_s": pil,
            "datamodule_spread": median_range(wall["datamodule"]),
            "pil_pipeline_spread": median_range(wall["pil"]),
            "pil_pipeline_workers": workers,
            "datamodule_worker_processes": len(pipelines["datamodule"][1]),
            "pil_pipeline_worker_processes": len(pipelines["pil"][1]),
            "ratios_to_pil": ratios,
            # Per CPU-second of the main process and each pipeline's own workers.
            "datamodule_images_per_cpu_s": median_range(cpu["datamodule"]),
            "pil_pipeline_images_per_cpu_s": median_range(cpu["pil"]),
            "cpu_ratio_to_pil": median_range(cpu_ratios),
            "cpu_ratios_to_pil": cpu_ratios,
            "consumer": consumer,
            "consumer_training_images_per_s": consumed,
            "ratio_to_pil": ours / pil,  # of the medians, as before
            "ratio_to_pil_spread": median_range(ratios),
            "ratio_to_consumer": ours / consumed,
            "targets": {"ratio_to_pil": 10, "ratio_to_consumer": 20},
        },
    }
