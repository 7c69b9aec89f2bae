"""Training crops decoded at a reduced size: RandomResizedCrop fused with the JPEG decoder.

ImageNet training decodes a whole photo (about 500 x 375) to keep one random crop of
8-100% of its area, shrunk to 224 x 224. libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 of
its size for a fraction of the cost (it inverts fewer DCT coefficients per 8 x 8 block
and writes fewer pixels), so ``CropDecoder`` samples the crop box from the header's size
first, then decodes at the largest reduction that leaves the box at least ``size`` pixels
on both sides, and resizes only the box. A crop the full decode would shrink is never
enlarged instead; one that must be enlarged anyway is decoded at full size.

The box follows torchvision's ``RandomResizedCrop.get_params`` exactly (the same calls
on torch's global generator), so DataLoader workers are seeded as for transforms.v2 and
the same seed gives the same box as ``v2.RandomResizedCrop``. torchvision.io has no
reduced-size decode, so this path decodes with PIL (``Image.draft``); both are built on
libjpeg-turbo.

Only the common case takes this path: a 3-channel JPEG without a rotating EXIF
orientation. Grayscale, CMYK and rotated JPEGs, PNG and the other formats are decoded
whole by ``decode_rgb`` and cropped as ``v2.RandomResizedCrop`` crops them; a JPEG the
reduced decode cannot read is decoded whole too, cropped with the box already drawn, so
broken files are reported exactly as before.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.nn.functional import interpolate
from torchvision.transforms import RandomResizedCrop

from cnn_bench.data.decode import (
    JPEG_MAGIC,
    MAX_PIXELS,
    JpegHeader,
    decode_rgb,
    jpeg_header,
    read_checked,
)

# The EXIF tag of the orientation; 1 (or absent) is upright as stored.
ORIENTATION = 0x0112
# libjpeg's DCT scalings that PIL's draft offers, largest first.
REDUCTIONS = (8, 4, 2, 1)


class CropDecoder:
    """``decoder(path, max_pixels)``: a ``RandomResizedCrop(size, scale, ratio)`` of the
    image at ``path`` as uint8 ``3 x size x size``, decoded at a reduced size where that
    loses nothing the crop keeps. Raises ``UnreadableImage`` as ``decode_rgb`` does."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """A random crop box ``(top, left, height, width)`` of a ``width x height`` image:
        torchvision's own sampling (10 tries, then the centre crop), on a stand-in tensor
        of that shape that holds one byte."""
        shape = torch.empty(1, dtype=torch.uint8).expand(3, height, width)
        return RandomResizedCrop.get_params(shape, list(self.scale), list(self.ratio))

    def __call__(self, path: str | Path, max_pixels: int = MAX_PIXELS) -> Tensor:
        path = Path(path)
        data = read_checked(path, max_pixels)
        header = jpeg_header(data) if data.startswith(JPEG_MAGIC) else None
        if not _plain(header, data):
            return self._crop(decode_rgb(path, max_pixels, data))
        box = self.box(header.width, header.height)
        factor = self.reduction(box)
        if factor > 1:
            try:
                return self._decode_reduced(data, box, factor)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                pass  # broken data: the full decoder gives the image or why it is unreadable
        image = decode_rgb(path, max_pixels, data)
        return self._crop(image, box if image.shape[-2:] == (header.height, header.width) else None)

    def reduction(self, box: tuple[int, int, int, int]) -> int:
        """The largest DCT reduction that leaves the crop box at least ``size`` on both sides."""
        _, _, height, width = box
        return next(f for f in REDUCTIONS if min(height, width) >= f * self.size or f == 1)

    def _crop(self, image: Tensor, box: tuple[int, int, int, int] | None = None) -> Tensor:
        """What ``v2.RandomResizedCrop`` does to a decoded image (the box drawn from its
        upright size unless given)."""
        top, left, height, width = box or self.box(image.shape[-1], image.shape[-2])
        # A channels-last copy of the box: torch's antialiased uint8 resize has a vectorised
        # kernel for that layout, nearly twice as fast as torchvision's resize of a view.
        crop = image[None, :, top : top + height, left : left + width]
        return interpolate(
            crop.contiguous(memory_format=torch.channels_last),
            size=(self.size, self.size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )[0]

    def _decode_reduced(self, data: bytes, box: tuple[int, int, int, int], factor: int) -> Tensor:
        top, left, height, width = box
        with Image.open(io.BytesIO(data)) as jpeg:
            if jpeg.mode != "RGB" or top + height > jpeg.height or left + width > jpeg.width:
                raise ValueError("not the image its header describes")
            full_width = jpeg.width
            drafted = jpeg.draft("RGB", (jpeg.width // factor, jpeg.height // factor))
            # The scale libjpeg was given: the reduced image covers the full one exactly.
            scale = full_width / drafted[1][2] if drafted else 1
            # PIL's resize of a box: the crop and the antialiased bilinear resize in one pass.
            crop = jpeg.resize(
                (self.size, self.size),
                Image.Resampling.BILINEAR,
                box=(left / scale, top / scale, (left + width) / scale, (top + height) / scale),
            )
        return torch.from_numpy(np.array(crop)).permute(2, 0, 1)


def _plain(header: JpegHeader | None, data: bytes) -> bool:
    """Whether the file is a colour JPEG shown as stored (no EXIF rotation or mirroring),
    whose header gives the size of the decoded image."""
    if header is None or header.components != 3 or not header.width or not header.height:
        return False
    if not header.exif:
        return True
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.getexif().get(ORIENTATION, 1) == 1
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
