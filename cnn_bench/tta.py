"""Test-time augmentation: predictions averaged over views of each test image.

Beside evaluation, as airbench's ``infer``: the views are made here, next to the
model; of the DataModule only its ``tta_augment`` hook is asked for (the ``augment``
views).

The views are cut from a whole test batch on the device. A test batch may be larger
than the network's input (ImageNet's test batches are ``eval_resize`` squares): the
views are ``crop_size`` crops of it, and the plain prediction is its centre crop.

- ``none``: the centre crop alone (the plain prediction).
- ``flip``: the centre crop and its mirror image.
- ``flip_translate``: the centre crop shifted diagonally by ``translate`` pixels
  (reflection-padded at the borders), and each mirrored: 10 views. A wider cousin of
  airbench's test-time augmentation, which weights six views (the image, its mirror
  and one-pixel reflection-padded shifts of the mirror pair).
- ``five_crop``, ``ten_crop``: the four corners and the centre, and their mirrors in
  ten-crop (Krizhevsky et al. 2012).
- ``augment``: ``num_augment`` draws of the data set's own training augmentation
  (its ``ImageDataModule.tta_augment``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as F

Views = Literal["none", "flip", "flip_translate", "five_crop", "ten_crop", "augment"]
# A DataModule's training augmentation on a normalised batch: ``tta_augment(images, generator)``.
Augment = Callable[[Tensor, torch.Generator], Tensor]


@dataclass
class TTAConfig:
    """Which views to average, and how.

    Args:
        views: the view set (see the module docstring).
        translate: pixels of shift in ``flip_translate``.
        num_augment: random training augmentations in ``augment``.
        average: average softmax ``probs`` (the default) or raw ``logits``.
        weights: one weight per view, in the order the views are made; default equal.
        seed: seed of the ``augment`` draws, so a test run repeats exactly.
    """

    views: Views = "flip"
    translate: int = 2
    num_augment: int = 8
    average: Literal["probs", "logits"] = "probs"
    weights: list[float] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        # Checked when the config is read, not at the first test batch.
        n = num_views(self)
        if self.weights is not None and len(self.weights) != n:
            raise ValueError(
                f"TTA views {self.views!r} make {n} views, but {len(self.weights)} weights given"
            )
        if self.translate < 1 or self.num_augment < 1:
            raise ValueError("TTA translate and num_augment must be at least 1")


def center_crop(images: Tensor, size: int | None) -> Tensor:
    """The centre ``size`` square of a batch; the batch itself when it is no larger."""
    if size is None or images.shape[-2:] == (size, size):
        return images
    return F.center_crop(images, [size, size])


def num_views(config: TTAConfig) -> int:
    counts = {"none": 1, "flip": 2, "flip_translate": 10, "five_crop": 5, "ten_crop": 10}
    return counts.get(config.views, config.num_augment)


def _shifted(images: Tensor, size: int, dy: int, dx: int, pad: int) -> Tensor:
    padded = torch.nn.functional.pad(images, (pad,) * 4, mode="reflect") if pad else images
    top = (padded.shape[-2] - size) // 2 + dy
    left = (padded.shape[-1] - size) // 2 + dx
    return padded[..., top : top + size, left : left + size]


def views(
    images: Tensor,
    config: TTAConfig,
    crop_size: int | None = None,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """The views of a batch ``N x C x H x W``, one ``N x C x crop x crop`` batch at a time
    (ten views of a large batch at once would take ten times its memory)."""
    size = crop_size or images.shape[-1]
    if config.views in ("none", "flip"):
        center = center_crop(images, size)
        yield center
        if config.views == "flip":
            yield center.flip(-1)
    elif config.views == "flip_translate":
        k = config.translate
        for dy, dx in ((0, 0), (-k, -k), (-k, k), (k, -k), (k, k)):
            view = _shifted(images, size, dy, dx, pad=k)
            yield view
            yield view.flip(-1)
    elif config.views in ("five_crop", "ten_crop"):
        crop = F.five_crop if config.views == "five_crop" else F.ten_crop
        yield from crop(images, [size, size])
    else:
        if augment is None:
            raise ValueError("TTA views 'augment' need a DataModule with an augment method")
        for _ in range(config.num_augment):
            yield center_crop(augment(images, generator), size)


def predict(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    config: TTAConfig,
    crop_size: int | None = None,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Class scores averaged over the views: probabilities, or logits with ``average: logits``."""
    weights = config.weights or [1.0] * num_views(config)
    total = sum(weights)
    out = None
    for weight, view in zip(
        weights, views(images, config, crop_size, augment, generator), strict=True
    ):
        logits = model(view).float()  # averaged in fp32, whatever the autocast
        scores = logits.softmax(dim=1) if config.average == "probs" else logits
        out = scores * (weight / total) if out is None else out + scores * (weight / total)
    return out
