"""MNIST (LeCun, Bottou, Bengio and Haffner 1998) held in memory as uint8.

Reads torchvision's layout, ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,
labels-idx1}-ubyte`` (or their ``.gz``), with numpy: an IDX file is a big-endian header
(magic number, then the size of each dimension) and the raw bytes. Every count is read
from the headers, never assumed: the copy the tests use holds 5,000 training images, the
official files 60,000. A seeded validation split is held out of the training images;
the 10,000 test images are used only by ``test``.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import Tensor

from cnn_bench.data import augment
from cnn_bench.data.common import DataError
from cnn_bench.data.memory import InMemoryImageDataModule

FOLDER = Path("MNIST") / "raw"
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = tuple(str(digit) for digit in range(10))
# IDX magic numbers: two zero bytes, the type (0x08: unsigned byte), the number of dimensions.
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
_CHUNK = 1 << 24


def _file(root: Path, name: str) -> Path | None:
    """The file, else its ``.gz``, else None."""
    for path in (root / FOLDER / name, root / FOLDER / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _read_at_most(path: Path, size: int) -> bytes:
    """Up to ``size`` bytes, read in chunks: a header claiming billions of images (or a
    small .gz that inflates without end) costs only the bytes really there."""
    opener = gzip.open if path.suffix == ".gz" else open
    chunks, total = [], 0
    with opener(path, "rb") as f:
        while total < size:
            chunk = f.read(min(_CHUNK, size - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    return b"".join(chunks)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file, or a DataError naming the file and what is wrong."""

    def bad(what: str) -> DataError:
        return DataError(f"{path}: {what}; put the data in place again (make data)")

    dims = magic & 0xFF
    try:
        header = _read_at_most(path, 4 + 4 * dims)
        if len(header) < 4 + 4 * dims:
            raise bad(f"{len(header)} bytes, shorter than an IDX header")
        found, *shape = np.frombuffer(header, dtype=">u4").tolist()
        if found != magic:
            raise bad(f"magic number {found:#010x}, not {magic:#010x} (an IDX file of uint8)")
        size = math.prod(shape)  # Python ints: no overflow, whatever the header claims
        # One byte past the end, to tell a file with trailing bytes from a whole one.
        data = _read_at_most(path, 4 + 4 * dims + size + 1)[4 + 4 * dims :]
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise bad(f"unreadable ({type(err).__name__}: {err})") from None
    if len(data) != size:
        more = "more" if len(data) > size else "fewer"
        raise bad(f"the header gives {size} bytes of data, the file holds {more}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def read_mnist(root: str | Path, train: bool) -> tuple[Tensor, Tensor]:
    """Images as uint8 ``N x 1 x 28 x 28`` and labels as int64, from the IDX files."""
    names = FILES[train]
    paths = [_file(Path(root), name) for name in names]
    missing = [name for name, path in zip(names, paths, strict=True) if path is None]
    if missing:
        raise DataError(f"MNIST files missing in {Path(root) / FOLDER}: {', '.join(missing)}")
    images = read_idx(paths[0], IMAGES_MAGIC)
    labels = read_idx(paths[1], LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{paths[0]}: images of {images.shape[1:]} pixels, not 28 x 28")
    if len(images) != len(labels):
        raise DataError(
            f"{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels"
        )
    if len(labels) and labels.max() >= len(CLASSES):
        raise DataError(f"{paths[1]}: labels outside 0..9 (e.g. {int(labels.max())})")
    return torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64))


class MNISTDataModule(InMemoryImageDataModule):
    """MNIST with a held-out validation split, a training subset and label noise.

    Args:
        data_dir: folder holding ``MNIST/raw``; defaults to ``$CNN_BENCH_DATA``, else ``./data``.
        batch_size: training images per step and process.
        eval_batch_size: images per validation/test step and process.
        val_size: training images held out for validation (the same split every run).
        split_seed: seed of the validation split, the subset and the label noise,
            independent of the training seed.
        train_subset: train on this many images of the rest, class-balanced (default all).
        label_noise: fraction of the training labels replaced by another class, at random.
        pad_to_32: zero-pad the 28 x 28 digits to 32 x 32, LeNet-5's input.
        crop_padding: random crop after zero padding by this many pixels (0: off, the default).
        download: fetch the official files through torchvision when they are missing.
        test_size: evaluate on the first ``test_size`` test images only (quick checks).
    """

    title = "MNIST"
    folder = FOLDER
    hint = "MNIST/raw (make data puts it in ./data)"
    torchvision_class = "MNIST"

    in_chans = 1

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: PositiveInt = 128,
        eval_batch_size: PositiveInt = 1000,
        val_size: NonNegativeInt = 500,
        split_seed: int = 0,
        train_subset: PositiveInt | None = None,
        label_noise: float = 0.0,
        pad_to_32: bool = False,
        crop_padding: NonNegativeInt = 0,
        download: bool = False,
        test_size: PositiveInt | None = None,
    ) -> None:
        super().__init__(data_dir, batch_size, eval_batch_size, split_seed)
        self.save_hyperparameters()
        self.check_subsets()
        self.classes = CLASSES
        self.image_size = 32 if pad_to_32 else 28

    def missing_files(self) -> list[str]:
        names = [*FILES[True], *FILES[False]]
        return [name for name in names if _file(self.data_dir, name) is None]

    def read_split(self, train: bool) -> tuple[Tensor, Tensor]:
        images, labels = read_mnist(self.data_dir, train)
        if self.hparams.pad_to_32:
            images = torch.nn.functional.pad(images, (2, 2, 2, 2))
        return images, labels

    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The training augmentation on a uint8 batch: random shifts, when asked for
        (no flips: a mirrored digit is another symbol)."""
        return augment.random_crop(images, self.hparams.crop_padding, generator)
