"""Hostile files in an ImageFolder tree: a PNG that crashed the native decoder, a
decompression bomb, a FIFO named like an image, links that loop or point into another
class. `cnn-bench data-check` (and so training, which reads through the same scan and
decoder) names each, never crashes, never hangs, and never relabels or repeats images."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest
from PIL import Image

from cnn_bench.data.decode import UnreadableImage, decode_rgb
from tests.conftest import run_cli
from tests.data.image_trees import CLASSES, make_tree, raw_png


def test_data_check_names_hostile_files_and_counts_only_real_images(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "imagenet", broken=False)
    train = tree / "train"
    clean = run_cli(["data-check", str(tree)], cwd=tmp_path, timeout=120)
    assert clean.returncode == 0, clean.stdout[-2000:] + clean.stderr[-2000:]
    (counts,) = [line for line in clean.stdout.splitlines() if line.startswith(f"{train}:")]
    first, second = train / CLASSES[0], train / CLASSES[1]
    # libpng segfaulted on image data shorter than the header claims (10 x 10 here).
    (first / "short.png").write_bytes(raw_png(10, 10, 8, b"\x00" * 10))
    # 20000 x 20000 claimed in 68 bytes: refused from its header, never decoded.
    (first / "bomb.png").write_bytes(raw_png(20000, 20000, 8, b"\x00" * 10))
    os.mkfifo(first / "fifo.jpg")  # reading it would block forever
    (first / "loop").symlink_to("..")  # the whole split again, labelled as this class
    (first / "other").symlink_to(second)  # another class's images under this label

    done = run_cli(["data-check", str(tree), "--workers", "2"], cwd=tmp_path, timeout=120)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"{first / 'short.png'}: image file is truncated" in done.stdout
    assert f"{first / 'bomb.png'}: 20000x20000 pixels, over the limit" in done.stdout
    assert f"{first / 'fifo.jpg'}: not a regular file" in done.stderr
    assert f"{first / 'loop'}: a link back into the tree" in done.stderr
    assert f"{first / 'other'}: a link back into the tree" in done.stderr
    # The same images as before, each once and under its own class.
    assert counts in done.stdout.splitlines()
    assert done.stdout.strip().splitlines()[-1] == f"NOT USABLE: 2 unreadable files in {train}"


def test_a_jpeg_is_refused_from_its_header_over_the_pixel_limit(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "JPEG")
    data = buffer.getvalue()
    sof = data.index(b"\xff\xc0")
    assert data[sof + 5 : sof + 9] == struct.pack(">HH", 48, 64)  # height, width
    path = tmp_path / "small.jpg"
    path.write_bytes(data)
    assert decode_rgb(path).shape == (3, 48, 64)
    assert decode_rgb(path, max_pixels=64 * 48).shape == (3, 48, 64)
    with pytest.raises(UnreadableImage, match="64x48 pixels, over the limit of 3,071"):
        decode_rgb(path, max_pixels=64 * 48 - 1)
    path.write_bytes(data[: sof + 5] + struct.pack(">HH", 30000, 40000) + data[sof + 9 :])
    with pytest.raises(UnreadableImage, match="40000x30000 pixels, over the limit"):
        decode_rgb(path)
