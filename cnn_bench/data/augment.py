"""Batched augmentation: whole uint8 batches as tensor ops on the training device.

Per-image Python transforms cost more than a small network's training step on a
GPU; the fast CIFAR-10 runs (airbench, hlb-CIFAR10) crop and flip whole batches
on the device instead. Every function takes an explicit ``torch.Generator`` so the
same seed gives the same augmentation, also after a resume.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def random_crop(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Random ``H x W`` crops of each image zero-padded by ``padding`` on every side."""
    return random_crop_flip(x, padding, generator, flip=False)


def random_flip(x: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    out = x.clone()
    mirrored = flip.nonzero()[:, 0]  # only these images are copied twice, not the whole batch
    out[mirrored] = x[mirrored].flip(3)
    return out


def random_crop_flip(
    x: Tensor, padding: int, generator: torch.Generator, flip: bool = True
) -> Tensor:
    """``random_crop`` then ``random_flip`` (when ``flip``), in one gather from the padded
    batch: the same random draws in the same order, so the same images bit for bit, at a
    third of the cost of cropping rows, then columns, then mirroring."""
    if padding == 0:
        return random_flip(x, generator) if flip else x
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device, generator=generator)
    padded_w = w + 2 * padding
    rows = torch.arange(h, device=x.device)[:, None] * padded_w
    cols = torch.arange(w, device=x.device)
    where = (rows + cols).flatten()[None]  # 1, h*w: the pixel each output pixel reads
    if flip:
        mirrored = torch.rand(n, device=x.device, generator=generator) < 0.5
        where = torch.where(mirrored[:, None], (rows + cols.flip(0)).flatten(), where)
    index = (dy * padded_w + dx) + where  # n, h*w into the flattened padded image
    padded = torch.nn.functional.pad(x, (padding,) * 4).flatten(2)
    return padded.gather(2, index[:, None].expand(-1, c, -1)).view(n, c, h, w)


def cutout(x: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Zero one ``size x size`` square per image, centred anywhere (DeVries & Taylor 2017)."""
    if size == 0:
        return x
    n, _, h, w = x.shape
    top = torch.randint(0, h, (n, 1, 1), device=x.device, generator=generator) - size // 2
    left = torch.randint(0, w, (n, 1, 1), device=x.device, generator=generator) - size // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return x.masked_fill(inside[:, None], 0)


def random_resized_crop(
    x: Tensor,
    size: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """Inception-style crops (Szegedy et al. 2015) of a batch, resized to ``size`` pixels.

    Each crop covers a random fraction ``scale`` of the area with a random aspect ratio
    (log-uniform in ``ratio``), at a random place, and is resampled bilinearly: one
    ``grid_sample`` for the whole batch instead of a Python loop over images.
    """
    n = x.shape[0]

    def uniform(low: float, high: float) -> Tensor:
        u = torch.rand(n, device=x.device, generator=generator)
        return low + (high - low) * u

    area = uniform(*scale)
    aspect = uniform(math.log(ratio[0]), math.log(ratio[1])).exp()
    # Width and height as fractions of the image's; grid coordinates run from -1 to 1.
    w = (area * aspect).sqrt().clamp(max=1)
    h = (area / aspect).sqrt().clamp(max=1)
    cx = uniform(-1, 1) * (1 - w)
    cy = uniform(-1, 1) * (1 - h)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return torch.nn.functional.grid_sample(x.float(), grid, mode="bilinear", align_corners=False)


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (or float in [0, 255]) images to float, standardised per channel.

    ``mean`` and ``std`` should already be on ``x``'s device (``on_device``): a copy
    from the host on every batch waits for the device."""
    mean = mean.to(x.device)[None, :, None, None]
    std = std.to(x.device)[None, :, None, None]
    # One new float tensor, standardised in place: the same numbers as (x - mean) / std,
    # without two more batch-sized temporaries, whose fresh pages made it 4x as slow on a
    # CPU (a 256-image ImageNet batch: 390 ms against 100 ms on one thread).
    return x.to(torch.float32, copy=True).sub_(mean).div_(std)


def on_device(datamodule: object, device: torch.device) -> None:
    """Move a DataModule's ``mean`` and ``std`` to ``device``, once: at the first batch
    of each device, not at every batch."""
    for name in ("mean", "std"):
        value = getattr(datamodule, name)
        if value.device != device:
            setattr(datamodule, name, value.to(device))
