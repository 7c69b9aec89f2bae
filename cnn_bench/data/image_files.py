"""Image files decoded in DataLoader workers, and the loader that reports the ones
that cannot be.

``ImageFiles[i]`` is a transformed uint8 image and its label, or ``Skipped`` when the
file cannot be decoded (torchvision.io, PIL as the fallback: ``data/decode.py``);
``collate_readable`` stacks the good ones and passes the skipped ones on, and
``ReportingLoader`` warns about each in the main process, where no warning is lost.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cnn_bench.data.decode import MAX_PIXELS, UnreadableImage, decode_rgb
from cnn_bench.data.folders import UnreadableImageWarning


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


class ImageFiles(Dataset):
    """Image files and labels; ``dataset[i]`` is a transformed uint8 image and its label,
    or ``Skipped`` when the file cannot be decoded."""

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        transform: Callable[[Tensor], Tensor],
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.files = files
        self.labels = labels
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int | Tensor) -> tuple[Tensor, int] | Skipped:
        path = self.files[int(index)]
        try:
            image = decode_rgb(path, self.max_pixels)
        except (UnreadableImage, OSError) as err:
            return Skipped(str(path), str(err) or type(err).__name__)
        return self.transform(image), self.labels[int(index)]


def collate_readable(
    items: list[tuple[Tensor, int] | Skipped],
) -> tuple[Tensor, Tensor, list[Skipped]]:
    """Stack the images that decoded; pass the skipped files on to be reported."""
    good = [item for item in items if not isinstance(item, Skipped)]
    skipped = [item for item in items if isinstance(item, Skipped)]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), skipped
    images = torch.stack([image for image, _ in good])
    return images, torch.tensor([label for _, label in good], dtype=torch.int64), skipped


class ReportingLoader(DataLoader):
    """A DataLoader that warns about each skipped file as its batch arrives and, when
    the pass over the data ends, how many were skipped. The warnings are issued in the
    main process, so none is lost in a worker."""

    def __init__(self, *args: Any, split: str = "data", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.split = split
        self.passes = 0
        self.skipped: list[Skipped] = []

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.passes += 1
        self.skipped = []
        try:
            for images, labels, skipped in super().__iter__():
                for item in skipped:
                    warnings.warn(
                        f"skipped {item.path}: {item.reason}", UnreadableImageWarning, stacklevel=1
                    )
                self.skipped += skipped
                if len(labels):  # a batch of nothing but broken files is left out
                    yield images, labels
        finally:
            if self.skipped:
                warnings.warn(
                    f"{self.split} pass {self.passes}: skipped {len(self.skipped)} unreadable "
                    "image files (named above); `cnn-bench data-check` lists them all",
                    UnreadableImageWarning,
                    stacklevel=1,
                )
