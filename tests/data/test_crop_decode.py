"""CropDecoder: the training crop decoded at a reduced size is torchvision's crop, near enough.

Every file is a real JPEG written by PIL: photographs large enough for 1/2, 1/4 and 1/8
decodes, and the awkward and broken files of ``image_trees``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from cnn_bench.data import ImageNetDataModule
from cnn_bench.data.crop_decode import CropDecoder
from cnn_bench.data.decode import UnreadableImage, decode_rgb
from cnn_bench.data.image_files import IMAGENET_MEAN, ImageFiles, Skipped
from tests.data.image_trees import BLUE, RED, awkward_files, make_tree, two_tone

SIZE = 64  # small crops, so that an 800 x 600 photo is decoded at every reduction


def photograph(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth shapes, edges and grain: detail at every scale, as in a photograph."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [
            128 + 100 * np.sin(x / 37.0) * np.cos(y / 23.0),
            128 + 90 * np.sin((x + y) / 51.0),
            np.where((x // 97 + y // 71) % 2 == 0, 60.0, 190.0),
        ],
        axis=-1,
    )
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_jpeg(path: Path, pixels: np.ndarray, **kwargs: object) -> Path:
    Image.fromarray(pixels).save(path, quality=90, **kwargs)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jpeg(tmp_path_factory.mktemp("photo") / "photo.JPEG", photograph(800, 600))


def test_the_box_is_torchvisions_for_the_same_seed() -> None:
    decoder = CropDecoder(SIZE)
    crop = v2.RandomResizedCrop(SIZE)
    for width, height in ((800, 600), (375, 500), (2000, 90), (64, 64)):
        image = torch.zeros(3, height, width, dtype=torch.uint8)
        for seed in range(20):
            torch.manual_seed(seed)
            box = decoder.box(width, height)
            torch.manual_seed(seed)
            params = crop.make_params([image])
            assert box == (params["top"], params["left"], params["height"], params["width"])


def test_boxes_keep_to_the_scale_and_ratio_ranges() -> None:
    decoder = CropDecoder(SIZE, scale=(0.25, 0.5), ratio=(3 / 4, 4 / 3))
    torch.manual_seed(0)
    width, height = 640, 480
    boxes = [decoder.box(width, height) for _ in range(2000)]
    areas = np.array([h * w / (width * height) for _, _, h, w in boxes])
    aspects = np.array([w / h for _, _, h, w in boxes])
    # Rounding the sides to pixels moves the area and the ratio by well under 1%.
    assert areas.min() > 0.25 * 0.99 and areas.max() < 0.5 * 1.01
    assert aspects.min() > 0.75 * 0.99 and aspects.max() < 4 / 3 * 1.01
    # Spread over the whole ranges, not stuck at one end (log-uniform in the ratio).
    assert areas.mean() == pytest.approx(0.375, abs=0.01)
    assert np.log(aspects).mean() == pytest.approx(0.0, abs=0.02)
    assert all(0 <= t <= height - h and 0 <= left <= width - w for t, left, h, w in boxes)
    # Too thin for any box of the ratio range: torchvision's centre crop.
    assert CropDecoder(SIZE).box(2000, 90) == (0, 940, 90, 120)


def test_reduced_decodes_are_close_to_the_full_decode_of_the_same_crop(photo: Path) -> None:
    # Down to 1% of the area: some boxes are under 2 x SIZE, decoded at full size.
    decoder = CropDecoder(SIZE, scale=(0.01, 1.0))
    crop = v2.RandomResizedCrop(SIZE, scale=(0.01, 1.0), antialias=True)
    full = decode_rgb(photo)
    used, diffs = set(), []
    for seed in range(60):
        torch.manual_seed(seed)
        reduction = decoder.reduction(decoder.box(800, 600))
        used.add(reduction)
        torch.manual_seed(seed)
        fast = decoder(photo)
        torch.manual_seed(seed)
        reference = crop(full)
        assert fast.dtype == torch.uint8 and fast.shape == (3, SIZE, SIZE)
        if reduction == 1:  # the same decode and the same resize: the same bytes
            assert torch.equal(fast, reference)
        diffs.append((fast.float() - reference.float()).abs().mean().item())
    assert used == {1, 2, 4, 8}
    # A shifted or wrongly scaled box differs by tens of levels on this image.
    assert max(diffs) < 8, diffs
    assert np.mean(diffs) < 4, diffs


def test_a_crop_smaller_than_the_output_is_decoded_whole(photo: Path) -> None:
    """A box under ``size`` pixels is enlarged from the full-size decode, never from a
    reduced one."""
    decoder = CropDecoder(224, scale=(0.01, 0.02))
    torch.manual_seed(0)
    boxes = [decoder.box(800, 600) for _ in range(50)]
    assert all(decoder.reduction(box) == 1 for box in boxes)
    assert CropDecoder(224).reduction((0, 0, 448, 447)) == 1
    assert CropDecoder(224).reduction((0, 0, 448, 448)) == 2
    assert CropDecoder(224).reduction((0, 0, 1800, 1792)) == 8


def _upright_two_tone(image: torch.Tensor) -> None:
    """Red above blue, whichever way the file was stored."""
    size = image.shape[-1]
    top, bottom = image[:, size // 4, size // 2].tolist(), image[:, 3 * size // 4, size // 2]
    assert max(abs(a - b) for a, b in zip(top, RED, strict=True)) < 16, top
    assert max(abs(a - b) for a, b in zip(bottom.tolist(), BLUE, strict=True)) < 16, bottom


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_photos_are_cropped_upright(tmp_path: Path, orientation: int) -> None:
    """Stored on its side, 1200 x 800 (large enough for a reduced decode when upright or
    not); shown upright as 800 x 1200, red above blue. The whole upright image is the
    only box of ratio 2/3 and scale 1."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    turn = Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
    stored = Image.fromarray(two_tone(800, 1200)).transpose(turn)
    path = tmp_path / "rotated.JPEG"
    stored.save(path, quality=90, exif=exif.tobytes())
    decoder = CropDecoder(SIZE, scale=(1.0, 1.0), ratio=(2 / 3, 2 / 3))
    assert decoder.box(800, 1200) == (0, 0, 1200, 800)
    _upright_two_tone(decoder(path))


@pytest.mark.parametrize("name", sorted(awkward_files()))
def test_awkward_files_give_three_channel_crops(tmp_path: Path, name: str) -> None:
    """Grayscale and CMYK JPEGs, PNGs and the rest: decoded whole, cropped the same."""
    path = tmp_path / name
    path.write_bytes(awkward_files()[name])
    decoder = CropDecoder(SIZE, scale=(1.0, 1.0), ratio=(1.5, 1.5))  # the whole 48 x 32
    image = decoder(path)
    assert image.dtype == torch.uint8 and image.shape == (3, SIZE, SIZE)
    if name.startswith("gray"):
        assert (image[0] == image[1]).all() and (image[1] == image[2]).all()
    else:
        _upright_two_tone(image)


def test_a_truncated_photo_is_skipped_with_the_reason_it_always_had(
    tmp_path: Path, photo: Path
) -> None:
    """Cut in the middle of the data the reduced decode reads: the file is skipped with
    the same reason as without the fast path."""
    data = photo.read_bytes()
    broken = tmp_path / "truncated.JPEG"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImage) as err:
        decode_rgb(broken)
    decoder = CropDecoder(SIZE, scale=(1.0, 1.0))
    assert decoder.reduction(decoder.box(800, 600)) == 8
    files = ImageFiles([broken, photo], [0, 1], v2.Identity(), decode=decoder)
    assert files[0] == Skipped(str(broken), str(err.value))
    image, label = files[1]
    assert image.shape == (3, SIZE, SIZE) and label == 1
    empty = tmp_path / "empty.JPEG"
    empty.write_bytes(b"")
    assert ImageFiles([empty], [0], v2.Identity(), decode=decoder)[0].reason == "empty file"


def test_the_datamodule_crops_in_the_decoder_and_keeps_the_rest_of_the_chain(
    tmp_path: Path,
) -> None:
    make_tree(tmp_path / "tree", awkward=False, broken=False)
    settings = dict(
        data_dir=str(tmp_path),
        folder="tree",
        num_workers=0,
        image_size=16,
        eval_resize=20,
        val_per_class=2,
        random_erasing=1.0,
    )
    fast = ImageNetDataModule(**settings)
    fast.setup()
    full = ImageNetDataModule(**settings, fast_decode=False)
    full.setup()
    assert isinstance(fast.datasets["train"].decode, CropDecoder)
    assert full.datasets["train"].decode is decode_rgb
    fill = torch.tensor([round(m) for m in IMAGENET_MEAN], dtype=torch.uint8)[:, None]
    for data in (fast, full):
        torch.manual_seed(0)
        image, _ = data.datasets["train"][0]
        assert image.shape == (3, 16, 16)
        # Erasing still follows the crop: some pixels are the mean colour.
        assert (image.flatten(1) == fill).all(0).any()
    # The same seed draws the same crops either way: the images barely differ.
    torch.manual_seed(1)
    a = [fast.datasets["train"][i][0] for i in range(6)]
    torch.manual_seed(1)
    b = [full.datasets["train"][i][0] for i in range(6)]
    assert all((x.float() - y.float()).abs().mean() < 8 for x, y in zip(a, b, strict=True))


def test_workers_draw_seeded_crops(photo: Path) -> None:
    """Crops come from torch's generator, which the DataLoader seeds per worker: the same
    seed gives the same batches, another seed other ones."""
    files = ImageFiles([photo] * 8, list(range(8)), v2.Identity(), decode=CropDecoder(SIZE))

    def batches(seed: int) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(
            files, batch_size=4, num_workers=2, generator=torch.Generator().manual_seed(seed)
        )
        return torch.cat([images for images, _ in loader])

    first = batches(0)
    assert torch.equal(first, batches(0))
    assert not torch.equal(first, batches(1))
    # Within a pass the workers differ too: no two crops alike.
    flat = first.flatten(1).float()
    assert torch.cdist(flat, flat).fill_diagonal_(1).min() > 0
