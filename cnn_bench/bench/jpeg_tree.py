"""A tree of JPEGs at ImageNet's sizes, for measuring the ImageNet data path without ImageNet.

Decoding speed depends on the pixel count and on how much the entropy decoder has to
read, so the images have ImageNet's shape rather than CIFAR's: longer sides drawn around
500 (ImageNet's commonest sizes are 500 x 375 and 500 x 333, in both orientations), a
few photos of about 2000 x 1500, quality 90. Each is a CIFAR-10 training image upscaled
to that size with grain at two scales added, so that it compresses to the 0.3-1 byte per
pixel of a photograph rather than to the few hundred bytes of a smooth upscale.

The tree is ImageFolder's layout, ``train/<class>/<n>.JPEG`` and ``val/<class>/<n>.JPEG``,
and the same seed writes the same bytes. It is written into a temporary folder and
renamed when complete, so an existing tree is always whole and is reused as it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from cnn_bench.data.common import DataError
from cnn_bench.data.folders import class_folders, image_files

# Longer side ~ 500 * exp(N(0, SPREAD)), clipped; aspect ratios (longer / shorter side) with
# their frequencies; the share of large photos and their longer side.
LONG_SIDE, SPREAD, LONG_RANGE = 500, 0.2, (256, 1000)
ASPECTS = ((4 / 3, 0.55), (3 / 2, 0.25), (1.0, 0.1), (16 / 9, 0.1))
PORTRAIT = 0.25
LARGE_SHARE, LARGE_RANGE = 0.03, (1800, 2400)
QUALITY = 90
VAL_PER_CLASS = 2
DONE = "tree.json"


def image_size(rng: np.random.Generator) -> tuple[int, int]:
    """Width and height of one photograph of the tree."""
    if rng.random() < LARGE_SHARE:
        long = int(rng.integers(*LARGE_RANGE))
    else:
        long = int(np.clip(LONG_SIDE * np.exp(rng.normal(0, SPREAD)), *LONG_RANGE))
    ratios, weights = zip(*ASPECTS, strict=True)
    short = round(long / ratios[rng.choice(len(ratios), p=weights)])
    return (short, long) if rng.random() < PORTRAIT else (long, short)


def photograph(source: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """``source`` upscaled to ``size`` with fine grain and a coarser texture added."""
    width, height = size
    pixels = np.asarray(source.convert("RGB").resize(size, Image.Resampling.BICUBIC), np.float32)
    fine = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    coarse = rng.normal(0, 10, (height // 4 + 1, width // 4 + 1, 3)).astype(np.float32)
    coarse = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)[:height, :width]
    return Image.fromarray(np.clip(pixels + fine + coarse, 0, 255).astype(np.uint8))


def _sources(cifar_jpeg: Path) -> list[list[Path]]:
    train = cifar_jpeg / "train"
    classes = class_folders(train) if train.is_dir() else []
    if not classes:
        raise DataError(
            f"CIFAR-10 JPEG tree not found in {cifar_jpeg}: run `make data` or set CNN_BENCH_DATA"
        )
    return [image_files(train / name) for name in classes]


def write_tree(
    root: Path, cifar_jpeg: Path, classes: int, images: int, seed: int = 0
) -> dict[str, int | float]:
    """The tree at ``root`` with ``classes`` x ``images`` training JPEGs (and
    ``VAL_PER_CLASS`` validation ones), written unless it is already there; returns
    what it holds."""
    wanted = {"classes": classes, "images_per_class": images, "seed": seed, "quality": QUALITY}
    done = root / DONE
    if done.is_file():
        found = json.loads(done.read_text())
        if {k: found.get(k) for k in wanted} == wanted:
            return found
        raise DataError(f"{root} holds another tree ({found}); remove it or choose another path")
    if root.exists():
        raise DataError(f"{root} exists but is not a finished tree: remove it or choose another")
    sources = _sources(cifar_jpeg)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pixels, files, large = 0, 0, 0
    for split, count in (("train", images), ("val", VAL_PER_CLASS)):
        for label in range(classes):
            folder = partial / split / f"c{label:04d}"
            folder.mkdir(parents=True)
            pool = sources[label % len(sources)]
            for n in range(count):
                # One generator per file: the same file whatever else the tree holds.
                rng = np.random.default_rng([seed, label, n, split == "val"])
                size = image_size(rng)
                with Image.open(pool[(n + (split == "val") * images) % len(pool)]) as source:
                    photo = photograph(source, size, rng)
                photo.save(folder / f"{n:05d}.JPEG", quality=QUALITY)
                pixels += size[0] * size[1]
                files += 1
                large += max(size) >= LARGE_RANGE[0]
    summary = {**wanted, "files": files, "mean_pixels": pixels / files, "large_files": large}
    (partial / DONE).write_text(json.dumps(summary, indent=2) + "\n")
    root.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(root)
    return summary
