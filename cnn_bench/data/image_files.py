"""Image files decoded in DataLoader workers, and the loader that reports the ones
that cannot be.

``ImageFiles[i]`` is a transformed uint8 image and its label, or ``Skipped`` when the
file cannot be decoded (torchvision.io, PIL as the fallback: ``data/decode.py``; or a
training crop decoded at a reduced size: ``data/crop_decode.py``);
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
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms import v2

from cnn_bench.data.decode import MAX_PIXELS, UnreadableImage, decode_rgb
from cnn_bench.data.folders import UnreadableImageWarning
from cnn_bench.data.sampling import keep_batch_count

# ImageNet's per-channel statistics on the 0-255 scale (torchvision's reference recipe).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


class ImageFiles(Dataset):
    """Image files and labels; ``dataset[i]`` is a transformed uint8 image and its label,
    or ``Skipped`` when the file cannot be decoded.

    ``decode(path, max_pixels)`` turns a file into a uint8 image (the whole image by
    default; ``CropDecoder``: the training crop) and ``transform`` does the rest.
    """

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        transform: Callable[[Tensor], Tensor],
        max_pixels: int = MAX_PIXELS,
        decode: Callable[[Path, int], Tensor] = decode_rgb,
    ) -> None:
        self.files = files
        self.labels = labels
        self.transform = transform
        self.max_pixels = max_pixels
        self.decode = decode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int | Tensor) -> tuple[Tensor, int] | Skipped:
        path = self.files[int(index)]
        try:
            image = self.decode(path, self.max_pixels)
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
    # default_collate stacks into shared memory in a worker; a plain stack would be copied
    # there once more when the batch is sent to the main process.
    images = default_collate([image for image, _ in good])
    return images, torch.tensor([label for _, label in good], dtype=torch.int64), skipped


class ReportingLoader(DataLoader):
    """A DataLoader that warns about each skipped file as its batch arrives and, when
    the pass over the data ends, how many were skipped. The warnings are issued in the
    main process, so none is lost in a worker."""

    def __init__(
        self, *args: Any, split: str = "data", keep_count: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.split = split
        # Training: a batch of nothing but broken files is replaced, not left out, so that
        # every DDP process takes the same number of steps (sampling.keep_batch_count).
        self.keep_count = keep_count
        self.passes = 0
        self.skipped: list[Skipped] = []

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.passes += 1
        self.skipped = []
        try:
            batches = self._reported(super().__iter__())
            if self.keep_count:
                yield from keep_batch_count(batches, lambda batch: len(batch[1]) > 0)
            else:  # a batch of nothing but broken files is left out
                yield from (batch for batch in batches if len(batch[1]))
        finally:
            if self.skipped:
                warnings.warn(
                    f"{self.split} pass {self.passes}: skipped {len(self.skipped)} unreadable "
                    "image files (named above); `cnn-bench data-check` lists them all",
                    UnreadableImageWarning,
                    stacklevel=1,
                )

    def _reported(self, batches: Iterator) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels, skipped in batches:
            for item in skipped:
                warnings.warn(
                    f"skipped {item.path}: {item.reason}", UnreadableImageWarning, stacklevel=1
                )
            self.skipped += skipped
            yield images, labels


def imagenet_train_crop(h: Any) -> v2.RandomResizedCrop:
    """The training crop of the ImageFolder DataModule's hyper-parameters."""
    return v2.RandomResizedCrop(h.image_size, scale=tuple(h.scale), antialias=True)


def imagenet_after_crop(h: Any) -> v2.Transform:
    """The training transforms that follow the crop: flip, jitter, policy, erasing."""
    train: list[v2.Transform] = [v2.RandomHorizontalFlip()] if h.flip else []
    if h.color_jitter:
        train.append(v2.ColorJitter(h.color_jitter, h.color_jitter, h.color_jitter))
    policy = {"trivial": v2.TrivialAugmentWide, "rand": v2.RandAugment}.get(h.auto_augment)
    train += [policy()] if policy else []
    if h.random_erasing:
        # The mean colour, which is what erasing to zero after normalisation gives.
        fill = [round(m) for m in IMAGENET_MEAN]
        train.append(v2.RandomErasing(h.random_erasing, value=fill))
    return v2.Compose(train or [v2.Identity()])


def imagenet_transforms(h: Any) -> dict[str, v2.Transform]:
    """The per-image transforms of each split, on uint8, from the ImageFolder DataModule's
    hyper-parameters: the standard ImageNet augmentation in training, resize and centre
    crop in evaluation (``test`` keeps ``eval_resize`` squares for ten-crop views)."""
    resize = v2.Resize(h.eval_resize, antialias=True)
    return {
        "train": v2.Compose([imagenet_train_crop(h), imagenet_after_crop(h)]),
        "val": v2.Compose([resize, v2.CenterCrop(h.image_size)]),
        "test": v2.Compose([resize, v2.CenterCrop(h.eval_resize)]),
        "predict": v2.Compose([resize, v2.CenterCrop(h.image_size)]),
    }
