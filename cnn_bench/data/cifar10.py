"""CIFAR-10 (Krizhevsky 2009) held in memory as uint8, augmented batch-wise on the device.

Reads torchvision's layout, ``<data_dir>/cifar-10-batches-py``, with a restricted
unpickler. A fixed, seeded validation split is held out of the 50,000 training
images (``data/memory.py``); the official 10,000 test images are used only by ``test``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import Tensor

from cnn_bench.data import augment
from cnn_bench.data.common import DataError
from cnn_bench.data.memory import InMemoryImageDataModule
from cnn_bench.data.safe_pickle import load_pickle

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _text(key: str | bytes) -> str:
    return key.decode() if isinstance(key, bytes) else key


def read_cifar10(root: str | Path, train: bool) -> tuple[Tensor, Tensor]:
    """Images as uint8 ``N x 3 x 32 x 32`` and labels as int64, from the python batches."""
    images, labels = [], []
    for name in TRAIN_FILES if train else ["test_batch"]:
        path = Path(root) / FOLDER / name
        batch_images, batch_labels = _checked_batch(path, load_pickle(path))
        images.append(torch.from_numpy(batch_images).reshape(-1, 3, 32, 32))
        labels.append(torch.from_numpy(batch_labels))
    return torch.cat(images), torch.cat(labels)


def _checked_batch(path: Path, batch: Any) -> tuple[np.ndarray, np.ndarray]:
    """A batch's ``data`` (N x 3072 uint8) and ``labels`` (N ints in 0..9), or a DataError
    naming the file and what is wrong: a tampered file must never train on shifted labels."""

    def bad(what: str) -> DataError:
        return DataError(f"{path}: {what}; put the data in place again (make data)")

    if not isinstance(batch, dict):
        raise bad(f"a {type(batch).__name__}, not a CIFAR-10 batch (a dict)")
    # Official files (Python 2) have str keys once decoded; re-pickled copies keep bytes.
    batch = {_text(k): v for k, v in batch.items()}
    missing = [key for key in ("data", "labels") if key not in batch]
    if missing:
        raise bad(f"no {' or '.join(missing)} entry")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise bad("data is not a 2-D uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise bad(f"images of {data.shape[1]} values, not 3072 (3 x 32 x 32)")
    try:
        labels = np.asarray(batch["labels"])
    except (TypeError, ValueError):
        labels = np.asarray([])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise bad("labels are not a list of integers")
    if len(labels) != len(data):
        raise bad(f"{len(data)} images but {len(labels)} labels")
    outside = labels[(labels < 0) | (labels >= len(CLASSES))]
    if len(outside):
        raise bad(f"labels outside 0..{len(CLASSES) - 1} (e.g. {int(outside[0])})")
    return data, labels.astype(np.int64)


class CIFAR10DataModule(InMemoryImageDataModule):
    """CIFAR-10 with a held-out validation split and on-device batch augmentation.

    Args:
        data_dir: folder holding ``cifar-10-batches-py``; defaults to ``$CNN_BENCH_DATA``,
            else ``./data``.
        batch_size: training images per step and process.
        eval_batch_size: images per validation/test step and process.
        val_size: training images held out for validation (the same split every run).
        split_seed: seed of the validation split, the subset and the label noise,
            independent of the training seed so that runs with different seeds are
            validated (and trained) on the same images.
        train_subset: train on this many images of the rest, class-balanced (default all).
        label_noise: fraction of the training labels replaced by another class, at random.
        download: fetch the data through torchvision when it is missing.
        crop_padding: random crop after zero padding by this many pixels (0: off).
        flip: random horizontal flip.
        cutout: side of the square zeroed at random in each training image (0: off).
        test_size: evaluate on the first ``test_size`` official test images only (quick checks).
    """

    title = "CIFAR-10"
    folder = FOLDER
    hint = "cifar-10-batches-py"
    torchvision_class = "CIFAR10"

    image_size = 32
    in_chans = 3
    classes = CLASSES

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: PositiveInt = 128,
        eval_batch_size: PositiveInt = 500,
        val_size: NonNegativeInt = 5000,
        split_seed: int = 0,
        download: bool = False,
        crop_padding: NonNegativeInt = 4,
        flip: bool = True,
        cutout: NonNegativeInt = 0,
        test_size: PositiveInt | None = None,
        train_subset: PositiveInt | None = None,
        label_noise: float = 0.0,
    ) -> None:
        super().__init__(data_dir, batch_size, eval_batch_size, split_seed)
        self.save_hyperparameters()
        self.check_subsets()

    # -- files ---------------------------------------------------------------------------
    def missing_files(self) -> list[str]:
        folder = self.data_dir / FOLDER
        return [n for n in [*TRAIN_FILES, "test_batch"] if not (folder / n).is_file()]

    def read_split(self, train: bool) -> tuple[Tensor, Tensor]:
        return read_cifar10(self.data_dir, train)

    # -- on the device -------------------------------------------------------------------
    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The training augmentation, on a uint8 batch."""
        h = self.hparams
        images = augment.random_crop_flip(images, h.crop_padding, generator, flip=h.flip)
        if h.cutout:
            images = augment.cutout(images, h.cutout, generator)
        return images
