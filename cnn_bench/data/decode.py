"""Image files as they really are, decoded to 3-channel RGB uint8 tensors.

torchvision.io decodes JPEG (nearly every file of ImageNet and the CIFAR-10 JPEG tree)
in C++ without a PIL round trip, converts grayscale and CMYK to RGB and applies the
EXIF orientation of camera photos; PIL decodes the other formats (PNG, WebP, GIF, BMP,
TIFF, PPM), converting palette, alpha and 16-bit images to RGB. The format is read from
the bytes, not the name, so a PNG saved as ``.JPEG`` (there are some in ILSVRC-2012)
decodes too. Every header is read before any pixel, against a pixel limit. Files that
cannot be read raise ``UnreadableImage`` with a short reason, never a decoder
traceback and never a crash.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

# The extensions an image tree may hold, as torchvision's ImageFolder lists them;
# other files (labels, checksums, READMEs) are ignored, not reported.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
)


# PIL's own limit, a 0.25-gigapixel image: larger ones are refused unread.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
JPEG_MAGIC = b"\xff\xd8\xff"


class UnreadableImage(ValueError):
    """A file that is empty, truncated or not an image; the message is the reason."""


def is_image_file(path: Path) -> bool:
    """An image by its name: a known extension, in any case, and not hidden."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _decode_pil(path: Path) -> Tensor:
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            # PIL clamps 16-bit grayscale to 255 in convert("RGB"): scale it to 8 bits first.
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                img = img.convert("I").point(lambda v: v / 256).convert("L")
            rgb = img.convert("RGB")
            return (
                torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
                .view(rgb.height, rgb.width, 3)
                .permute(2, 0, 1)
                .contiguous()
            )
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        # PIL's own words ("image file is truncated", "cannot identify image file") are
        # the clearest reason; strip the BytesIO/path noise it sometimes appends.
        raise UnreadableImage(str(err).split(" <")[0].replace(str(path), "").strip(" '")) from None


def read_checked(path: Path, max_pixels: int = MAX_PIXELS) -> bytes:
    """The bytes of the image file at ``path``, once its header is known to be within
    ``max_pixels``: an image over the limit is refused before anything is decoded (a 1 MB
    PNG can claim 20000 x 20000 and take gigabytes)."""
    data = path.read_bytes()
    if not data:
        raise UnreadableImage("empty file")
    _check_header(data, max_pixels)
    return data


def decode_rgb(path: str | Path, max_pixels: int = MAX_PIXELS, data: bytes | None = None) -> Tensor:
    """The image at ``path`` as uint8 ``3 x H x W`` RGB, upright per its EXIF orientation.

    The header is read first and checked against ``max_pixels`` (``data``: the file's bytes
    from ``read_checked``, read once by a caller that looked at the header itself). Only
    JPEG goes to torchvision's decoder: its libpng build crashes the whole process (a
    segfault, not an exception) on a PNG whose image data is shorter than its header
    claims, so PNG and the other formats are decoded by PIL, which reports such a file as
    truncated.
    """
    path = Path(path)
    if data is None:
        data = read_checked(path, max_pixels)
    if not data.startswith(JPEG_MAGIC):
        return _decode_pil(path)
    try:
        image = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8),
            mode=ImageReadMode.RGB,
            apply_exif_orientation=True,
        )
    except RuntimeError:
        return _decode_pil(path)
    return image


def _check_header(data: bytes, max_pixels: int) -> None:
    """The size from the header alone (PIL reads no pixels on open), against the limit."""
    size = _jpeg_size(data) if data.startswith(JPEG_MAGIC) else None
    if size is not None:  # a few markers read: a twentieth of the time PIL takes to open
        width, height = size
    else:
        width, height = _pil_size(data, max_pixels)
    if width * height > max_pixels:
        raise UnreadableImage(
            f"{width}x{height} pixels, over the limit of {max_pixels:,} (a decompression bomb?)"
        )


def _pil_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError:  # PIL's own refusal, at twice its limit
        width, height = _png_size(data) or (0, 0)
        if not width:
            raise UnreadableImage(f"over the limit of {max_pixels:,} pixels") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise UnreadableImage(str(err).split(" <")[0].strip(" '") or "not an image") from None
    return width, height


class JpegHeader(NamedTuple):
    """What a JPEG's markers say before its first pixel."""

    width: int
    height: int
    components: int  # 3: colour (YCbCr or RGB), 1: grayscale, 4: CMYK or YCCK
    exif: bool  # an EXIF block, which may rotate the image


def jpeg_header(data: bytes) -> JpegHeader | None:
    """Size, component count and EXIF presence from a JPEG's markers up to the
    start-of-frame; None when they cannot be read."""
    i, exif = 2, False
    while i + 10 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
            continue
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\0\0":
            exif = True
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return JpegHeader(width, height, data[i + 9], exif)
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's start-of-frame marker; None when not found."""
    header = jpeg_header(data)
    return None if header is None else (header.width, header.height)


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None
