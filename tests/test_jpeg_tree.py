"""The generated tree of ImageNet-sized JPEGs: the same bytes for a seed, ImageNet's shapes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnn_bench.bench.jpeg_tree import image_size, write_tree
from cnn_bench.data.common import DataError


def _digests(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*.JPEG"))
    }


def test_sizes_are_imagenets() -> None:
    rng = np.random.default_rng(0)
    sizes = np.array([image_size(rng) for _ in range(4000)])
    long, short = sizes.max(1), sizes.min(1)
    assert 450 <= np.median(long) <= 550 and 330 <= np.median(short) <= 400
    assert 0.02 <= np.mean(long >= 1800) <= 0.04  # the few large photos
    assert 0.15 <= np.mean(sizes[:, 1] > sizes[:, 0]) <= 0.35  # portraits


def test_the_same_seed_writes_the_same_tree_and_it_is_reused(
    tmp_path: Path, cifar_root: Path
) -> None:
    cifar = cifar_root / "cifar10-jpeg"
    summary = write_tree(tmp_path / "a", cifar, classes=2, images=3)
    assert summary["files"] == 2 * (3 + 2)
    write_tree(tmp_path / "b", cifar, classes=2, images=3)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    write_tree(tmp_path / "c", cifar, classes=2, images=3, seed=1)
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")
    first = next((tmp_path / "a").rglob("*.JPEG"))
    with Image.open(first) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and min(image.size) >= 128
        # Grain keeps it from compressing like a smooth upscale (ImageNet: about 110 kB).
        assert first.stat().st_size > 0.2 * image.width * image.height
    stamp = first.stat().st_mtime_ns
    assert write_tree(tmp_path / "a", cifar, classes=2, images=3) == summary
    assert first.stat().st_mtime_ns == stamp  # reused, not rewritten
    with pytest.raises(DataError, match="holds another tree"):
        write_tree(tmp_path / "a", cifar, classes=2, images=4)
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError, match="not a finished tree"):
        write_tree(tmp_path / "mine", cifar, classes=2, images=3)
    with pytest.raises(DataError, match="CIFAR-10 JPEG tree not found"):
        write_tree(tmp_path / "d", tmp_path / "nowhere", classes=2, images=3)
