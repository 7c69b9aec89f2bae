"""Image trees as they are found in the wild, written by the tests.

Every image is two flat colours, red above blue, so a test can tell whether a file
came out as upright RGB whatever its format (JPEG shifts colours a little, never
that much).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from cnn_bench.data import ImageNetDataModule

RED, BLUE = (220, 20, 20), (20, 20, 220)
CLASSES = ("n01440764", "n01443537", "n01484850")


def two_tone(width: int, height: int) -> np.ndarray:
    """``height x width x 3`` uint8: red in the top half, blue in the bottom half."""
    image = np.empty((height, width, 3), np.uint8)
    image[: height // 2], image[height // 2 :] = RED, BLUE
    return image


def raw_png(width: int, height: int, bit_depth: int, rows: bytes) -> bytes:
    """An RGB PNG written by hand (IHDR, one IDAT, IEND) whose header says ``width x
    height`` whatever ``rows`` (filtered scanlines) holds: also PNGs PIL cannot write."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _png16_rgb(image: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (PIL cannot write one)."""
    height, width, _ = image.shape
    rows = (image.astype(">u2") * 257).reshape(height, -1)
    return raw_png(width, height, 16, b"".join(b"\x00" + row.tobytes() for row in rows))


def _save(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def awkward_files() -> dict[str, bytes]:
    """Readable files in every awkward format; each decodes to an upright 48 x 32 two-tone."""
    rgb = Image.fromarray(two_tone(48, 32))
    # Stored on its side; EXIF orientation 6 ("rotate 90 degrees clockwise to view")
    # makes it upright again.
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = rgb.transpose(Image.Transpose.ROTATE_90)
    gray16 = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
    return {
        "grayscale.JPEG": _save(rgb.convert("L"), "JPEG", quality=95),
        "cmyk.JPEG": _save(rgb.convert("CMYK"), "JPEG", quality=95),
        "palette.png": _save(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "alpha.png": _save(rgb.convert("RGBA"), "PNG"),
        "gray_alpha.png": _save(rgb.convert("LA"), "PNG"),
        "gray16.png": _save(gray16, "PNG"),
        "rgb16.png": _png16_rgb(two_tone(48, 32)),
        "png_named.JPEG": _save(rgb, "PNG"),
        "exif_rotated.JPEG": _save(sideways, "JPEG", quality=95, exif=exif.tobytes()),
        "bitmap.bmp": _save(rgb, "BMP"),
        "scan.TIFF": _save(rgb, "TIFF"),
    }


def broken_files() -> dict[str, bytes]:
    """Files with an image name that no decoder can read, and why."""
    jpeg = _save(Image.fromarray(two_tone(48, 32)), "JPEG")
    return {
        "truncated.JPEG": jpeg[: len(jpeg) // 2],
        "empty.JPEG": b"",
        "not_an_image.JPEG": b"<html>404 Not Found</html>",
    }


def make_tree(
    root: Path,
    train_per_class: int = 12,
    val_per_class: int = 4,
    awkward: bool = True,
    broken: bool = True,
) -> Path:
    """``root/train/<class>/`` and ``root/val/<class>/`` of JPEGs of varied sizes; the first
    class's training folder also holds the awkward and broken files, plus files that
    must be ignored (hidden, other extensions)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                w, h = (int(s) for s in rng.integers(24, 80, size=2))
                # The class shows in the pixels, so a network can learn something.
                image = (two_tone(w, h) // (label + 1)).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{name}_{i:04d}.JPEG", quality=90)
    first = root / "train" / CLASSES[0]
    files = {**(awkward_files() if awkward else {}), **(broken_files() if broken else {})}
    for name, data in files.items():
        (first / name).write_bytes(data)
    # Never read: a hidden file, a hidden folder, files that are not images.
    (first / ".hidden.JPEG").write_bytes(b"not an image, and hidden")
    (first / ".thumbnails").mkdir()
    (first / ".thumbnails" / "t.JPEG").write_bytes(b"")
    (first / "labels.csv").write_text("file,label\n")
    (root / "train" / "README.txt").write_text("not a class\n")
    (root / "train" / ".cache").mkdir()
    return root


def small_datamodule(tree: Path, **kwargs: object) -> ImageNetDataModule:
    """An ImageNetDataModule over ``tree`` at 32 pixels, small batches, no workers."""
    from cnn_bench.data import ImageNetDataModule

    settings = dict(
        data_dir=str(tree.parent),
        folder=tree.name,
        num_workers=0,
        image_size=32,
        eval_resize=40,
        val_per_class=2,
        batch_size=8,
        eval_batch_size=8,
    )
    return ImageNetDataModule(**{**settings, **kwargs})
