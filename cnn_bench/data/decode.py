"""Image files as they really are, decoded to 3-channel RGB uint8 tensors.

torchvision.io decodes JPEG, PNG, WebP and GIF in C++ without a PIL round trip,
converts grayscale, CMYK, palette and alpha images to RGB, and applies the EXIF
orientation of camera photos. It reads the format from the bytes, not the name, so
a PNG saved as ``.JPEG`` (there are some in ILSVRC-2012) decodes too. PIL is the
fallback for the rest (BMP, TIFF, PPM). Files that neither can read raise
``UnreadableImage`` with a short reason, never a decoder traceback.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

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


def decode_rgb(path: str | Path) -> Tensor:
    """The image at ``path`` as uint8 ``3 x H x W`` RGB, upright per its EXIF orientation."""
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise UnreadableImage("empty file")
    try:
        image = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8),
            mode=ImageReadMode.RGB,
            apply_exif_orientation=True,
        )
    except RuntimeError:
        # torchvision does not read this format, or found the file broken: PIL decides.
        return _decode_pil(path)
    if image.dim() == 4:  # an animated GIF: its first frame
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = F.to_dtype(image, torch.uint8, scale=True)
    return image
