"""The data path: images/s the DataModules deliver, against what a network consumes.

Three numbers for CIFAR-10 on one machine: ``CIFAR10DataModule``'s training loader with
its augmentation on the device (what ``cnn-bench fit`` runs), torchvision's per-image
PIL pipeline over the same uint8 arrays in DataLoader workers, and the images/s a
ResNet-18 training step consumes. The data path is never the bottleneck when the first
is far above the third.
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

from cnn_bench.bench.common import bench_device, images_per_second
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


def datamodule_step(data: CIFAR10DataModule) -> Callable[[], None]:
    """One training batch from the DataModule's loader, moved to the device, augmented there."""
    device = bench_device()
    generator = torch.Generator(device).manual_seed(0)
    mean, std = data.mean.to(device), data.std.to(device)
    batches = _forever(data.train_dataloader())

    def step() -> None:
        images, labels = next(batches)
        images = images.to(device, non_blocking=True)
        augment.normalize(data.augment(images, generator), mean, std)
        labels.to(device, non_blocking=True)

    return step


def pil_step(data: CIFAR10DataModule, workers: int) -> Callable[[], None]:
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
    return step


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
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(repeats):  # interleaved, so a busy moment of the machine hits both
        for name, step in pipelines.items():
            rates[name].append(
                images_per_second(
                    step, batch_size, device, warmup=1, min_steps=5, min_seconds=min_seconds
                )[0]
            )
    ours, pil = (statistics.median(rates[name]) for name in pipelines)
    consumed = training_rate(consumer, batch_size, min_seconds)
    return {
        "batch_size": batch_size,
        "device": str(bench_device()),
        "cifar10": {
            "datamodule_images_per_s": ours,
            "pil_pipeline_images_per_s": pil,
            "datamodule_spread": median_range(rates["datamodule"]),
            "pil_pipeline_spread": median_range(rates["pil"]),
            "pil_pipeline_workers": workers,
            "consumer": consumer,
            "consumer_training_images_per_s": consumed,
            "ratio_to_pil": ours / pil,
            "ratio_to_consumer": ours / consumed,
            "targets": {"ratio_to_pil": 10, "ratio_to_consumer": 20},
        },
    }
