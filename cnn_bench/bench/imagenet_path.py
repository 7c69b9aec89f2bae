"""The ImageNet data path: ``ImageNetDataModule``'s training loader against torchvision's.

Both read the same tree of ImageNet-sized JPEGs (``jpeg_tree``) with the same worker
count and batch size, in interleaved runs:

- ``datamodule``: what ``cnn-bench fit`` runs, the crop decoded at a reduced size where
  it allows (``fast_decode``), uint8 batches, normalised to float by the DataModule's
  own after-transfer step;
- ``datamodule_full_decode``: the same with ``fast_decode=False``, every file decoded whole;
- ``torchvision``: ``ImageFolder`` with ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``,
  ``ToTensor`` and ``Normalize`` in the workers, float batches.

Wall-clock images/s measures the neighbours too on a shared machine; images per
CPU-second (the main process and its workers, from ``/proc/<pid>/stat``) does not. A
worker's rate, images per second of its own CPU time, says how many workers feed a
network: ResNet-50 in bf16 on an H200 trains at about 3,000 images/s.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from cnn_bench.bench.common import bench_device, cpu_seconds, synchronize
from cnn_bench.bench.jpeg_tree import write_tree
from cnn_bench.data import ImageNetDataModule
from cnn_bench.data.common import DataError, default_data_dir
from cnn_bench.data.image_files import IMAGENET_MEAN, IMAGENET_STD
from cnn_bench.stats import median_range

TARGET_RATIO = 2
# Images/s of ResNet-50 bf16 training on one H200, the rate the workers must feed.
NETWORK_IMAGES_PER_S = 3000
PIPELINES = ("datamodule", "datamodule_full_decode", "torchvision")


def _forever(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


class Pipeline:
    """A training loader with persistent workers and the step that consumes one batch."""

    def __init__(self, loader: DataLoader, on_device: Callable[[Any], Any]) -> None:
        self.loader = loader
        self.batches = _forever(loader)
        self.on_device = on_device
        self.device = bench_device()

    def step(self) -> int:
        images, labels = next(self.batches)
        self.on_device((images.to(self.device, non_blocking=True), labels.to(self.device)))
        return len(labels)

    def workers(self) -> list[int]:
        """The worker processes of the live iterator (persistent: the same every epoch)."""
        return [worker.pid for worker in self.loader._iterator._workers]

    def run(self, batches: int) -> dict[str, float]:
        """One timed run of ``batches`` batches, once the batches the workers made ahead
        while the loader waited are taken untimed: the run times their making, not a queue."""
        for _ in range(self.loader.prefetch_factor * self.loader.num_workers):
            self.step()
        synchronize(self.device)
        workers = set(self.workers())
        main, every = cpu_seconds(), cpu_seconds(workers)
        start = time.perf_counter()
        images = sum(self.step() for _ in range(batches))
        synchronize(self.device)
        wall = time.perf_counter() - start
        main_cpu = cpu_seconds() - main
        worker_cpu = cpu_seconds(workers) - every - main_cpu
        # At least one clock tick each: a tiny run can fall between two.
        tick = 1 / os.sysconf("SC_CLK_TCK")
        main_cpu, worker_cpu = max(main_cpu, tick), max(worker_cpu, tick)
        return {
            "images_per_s": images / wall,
            "images_per_cpu_s": images / (main_cpu + worker_cpu),
            "per_worker_images_per_s": images / worker_cpu,
            "main_cpu_share": main_cpu / (main_cpu + worker_cpu),
        }


def settle(pipelines: Iterable[Pipeline], timeout: float = 60.0) -> None:
    """Wait until no worker of any pipeline is busy: the others fill their queues after
    their run, which would take cores from the next run if it started at once."""
    pids = {pid for pipeline in pipelines for pid in pipeline.workers()}
    deadline = time.perf_counter() + timeout
    before = cpu_seconds(pids)
    while time.perf_counter() < deadline:
        time.sleep(0.25)
        now = cpu_seconds(pids)
        if now - before < 0.02:  # two clock ticks in a quarter of a second: idle
            return
        before = now


def datamodule_pipeline(tree: Path, batch_size: int, workers: int, fast_decode: bool) -> Pipeline:
    data = ImageNetDataModule(
        data_dir=str(tree.parent),
        folder=tree.name,
        val_per_class=0,
        batch_size=batch_size,
        num_workers=workers,
        fast_decode=fast_decode,
    )
    data.setup("fit")
    # Outside a Trainer the after-transfer step is the evaluation one: normalisation to
    # float, which is all ImageNet training does there too (no mixing here).
    return Pipeline(data.train_dataloader(), lambda batch: data.on_after_batch_transfer(batch, 0))


def torchvision_pipeline(tree: Path, batch_size: int, workers: int) -> Pipeline:
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    transform = T.Compose(
        [
            T.RandomResizedCrop(224),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([m / 255 for m in IMAGENET_MEAN], [s / 255 for s in IMAGENET_STD]),
        ]
    )
    loader = DataLoader(
        ImageFolder(str(tree / "train"), transform),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=True,
        pin_memory=bench_device().type == "cuda",
    )
    return Pipeline(loader, lambda batch: batch)


def measure(
    tree: Path, batch_size: int, workers: int, batches: int, repeats: int
) -> dict[str, Any]:
    """Median rates of ``repeats`` interleaved runs of each pipeline over ``tree``."""
    if workers < 1:
        raise DataError("the ImageNet data path is measured with at least one worker")
    pipelines = {
        "datamodule": datamodule_pipeline(tree, batch_size, workers, fast_decode=True),
        "datamodule_full_decode": datamodule_pipeline(tree, batch_size, workers, False),
        "torchvision": torchvision_pipeline(tree, batch_size, workers),
    }
    # The workers' start-up, which a long run pays once, stays out of the timed runs.
    for pipeline in pipelines.values():
        for _ in range(2 * workers):
            pipeline.step()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in pipelines}
    for _ in range(repeats):  # interleaved, so a busy moment of the machine hits all three
        for name, pipeline in pipelines.items():
            settle(pipelines.values())
            runs[name].append(pipeline.run(batches))
    result: dict[str, Any] = {
        "batch_size": batch_size,
        "workers": workers,
        "batches_per_run": batches,
        "repeats": repeats,
        "device": str(bench_device()),
        "network_images_per_s": NETWORK_IMAGES_PER_S,
        "target_ratio": TARGET_RATIO,
    }
    for name, measured in runs.items():
        rates = {key: median_range([run[key] for run in measured]) for key in measured[0]}
        per_worker = rates["per_worker_images_per_s"]["median"]
        rates["workers_for_network"] = math.ceil(NETWORK_IMAGES_PER_S / per_worker)
        result[name] = rates
    for key in ("images_per_s", "images_per_cpu_s", "per_worker_images_per_s"):
        for name in ("datamodule", "datamodule_full_decode"):
            # Pair by pair: each ratio is of two runs a moment apart.
            ratios = [
                ours[key] / theirs[key]
                for ours, theirs in zip(runs[name], runs["torchvision"], strict=True)
            ]
            result.setdefault("ratio_to_torchvision", {}).setdefault(name, {})[key] = median_range(
                ratios
            )
    return result


def gpu_check(root: Path, tiny: bool) -> dict[str, Any]:
    """The GPU check's ImageNet row: ``ImageNetDataModule``'s training loader with every
    core as a DataLoader worker, on the bench's tree (written under ``root`` when tiny,
    else reused from the data folder), and the workers a 3,000 images/s network needs."""
    data_dir = Path(default_data_dir())
    classes, images = (2, 12) if tiny else (10, 320)
    tree = root / "tree" if tiny else data_dir / f"imagenet-like-{classes}x{images}"
    try:
        summary = write_tree(tree, data_dir / "cifar10-jpeg", classes, images)
    except DataError as err:
        return {"skipped": str(err)}
    workers = min(2, os.cpu_count() or 1) if tiny else os.cpu_count() or 1
    # Batches small enough that every worker has several in an epoch of the tree.
    batch_size, batches = (8, 2) if tiny else (64, 40)
    pipeline = datamodule_pipeline(tree, batch_size, workers, fast_decode=True)
    for _ in range(2 * workers):
        pipeline.step()
    settle([pipeline])
    run = pipeline.run(batches)
    return {
        **run,
        "workers": workers,
        "batch_size": batch_size,
        "batches": batches,
        "network_images_per_s": NETWORK_IMAGES_PER_S,
        "workers_for_network": math.ceil(NETWORK_IMAGES_PER_S / run["per_worker_images_per_s"]),
        "tree": {**summary, "path": str(tree)},
    }
