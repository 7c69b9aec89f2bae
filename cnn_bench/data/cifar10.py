"""CIFAR-10 (Krizhevsky 2009) held in memory as uint8, augmented batch-wise on the device.

Reads torchvision's layout, ``<data_dir>/cifar-10-batches-py``, with a restricted
unpickler. A fixed, seeded validation split is held out of the 50,000 training
images; the official 10,000 test images are used only by ``test``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader

from cnn_bench.data import augment
from cnn_bench.data.common import DataError, default_data_dir
from cnn_bench.data.safe_pickle import load_pickle
from cnn_bench.data.sampling import ShardedBatches, TensorBatches

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


class CIFAR10DataModule(ShardedBatches, L.LightningDataModule):
    """CIFAR-10 with a held-out validation split and on-device batch augmentation.

    Args:
        data_dir: folder holding ``cifar-10-batches-py``; defaults to ``$CNN_BENCH_DATA``,
            else ``./data``.
        batch_size: training images per step and process.
        eval_batch_size: images per validation/test step and process.
        val_size: training images held out for validation (the same split every run).
        split_seed: seed of the validation split, independent of the training seed so
            that runs with different seeds are validated on the same images.
        download: fetch the data through torchvision when it is missing.
        crop_padding: random crop after zero padding by this many pixels (0: off).
        flip: random horizontal flip.
        cutout: side of the square zeroed at random in each training image (0: off).
        test_size: evaluate on the first ``test_size`` official test images only (quick checks).
    """

    num_classes = len(CLASSES)
    image_size = 32
    in_chans = 3

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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = Path(data_dir or default_data_dir())
        # Plain ints: the parser passes its PositiveInt and NonNegativeInt, which yaml
        # (the loggers' hparams.yaml) and weights-only checkpoint loading do not know.
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.val_size = int(val_size)
        self.split_seed = split_seed
        self.download = download
        self.crop_padding = int(crop_padding)
        self.flip = flip
        self.cutout = int(cutout)
        self.test_size = None if test_size is None else int(test_size)
        self.classes = CLASSES
        self.seed = 0
        self.datasets: dict[str, TensorBatches] = {}

    # -- files ---------------------------------------------------------------------------
    def _missing(self) -> list[str]:
        folder = self.data_dir / FOLDER
        return [n for n in [*TRAIN_FILES, "test_batch"] if not (folder / n).is_file()]

    def prepare_data(self) -> None:
        missing = self._missing()
        if not missing:
            return
        where = self.data_dir.resolve() / FOLDER
        if not self.download:
            raise DataError(
                f"CIFAR-10 not found in {where} (missing {', '.join(missing)}): set "
                "--data.data_dir or $CNN_BENCH_DATA to the folder holding cifar-10-batches-py, "
                "or pass --data.download true"
            )
        from torchvision.datasets import CIFAR10

        try:
            CIFAR10(str(self.data_dir), download=True)
        except Exception as err:  # any network or archive failure: say it in one line
            raise DataError(
                f"could not download CIFAR-10 into {where} ({type(err).__name__}: {err}); "
                "copy cifar-10-batches-py there by hand and run again"
            ) from None

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self._missing():
            self.prepare_data()  # a rank that skipped prepare_data still gets the clear error
        self.seed = torch.initial_seed() % 2**31
        images, labels = read_cifar10(self.data_dir, train=True)
        if not 0 <= self.val_size < len(labels):
            raise DataError(
                f"val_size must be between 0 and {len(labels) - 1}, got {self.val_size}"
            )
        order = torch.randperm(
            len(labels), generator=torch.Generator().manual_seed(self.split_seed)
        )
        self.val_indices, self.train_indices = order[: self.val_size], order[self.val_size :]
        self.datasets["train"] = TensorBatches(
            images[self.train_indices], labels[self.train_indices]
        )
        self.datasets["val"] = TensorBatches(images[self.val_indices], labels[self.val_indices])
        test_images, test_labels = read_cifar10(self.data_dir, train=False)
        keep = slice(self.test_size)
        self.datasets["test"] = TensorBatches(test_images[keep], test_labels[keep])
        train_images = self.datasets["train"].images.float()
        self.mean = train_images.mean(dim=(0, 2, 3))
        self.std = train_images.std(dim=(0, 2, 3))

    # -- loaders -------------------------------------------------------------------------
    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        sampler = self.batch_sampler(len(self.datasets[split]), batch_size, train=shuffle)
        # batch_size=None: the sampler yields whole index batches, the dataset gathers them.
        return DataLoader(self.datasets[split], sampler=sampler, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # -- on the device -------------------------------------------------------------------
    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The training augmentation, on a uint8 batch."""
        if self.crop_padding:
            images = augment.random_crop(images, self.crop_padding, generator)
        if self.flip:
            images = augment.random_flip(images, generator)
        if self.cutout:
            images = augment.cutout(images, self.cutout, generator)
        return images

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, Tensor):  # the model summary's example input, already a float
            return batch
        images, labels = batch
        trainer = self.trainer
        if trainer is not None and trainer.training:
            # Seeded by position, not by history, so a resumed run augments identically.
            # Each process draws its own crops and flips (the rank is in the seed).
            step = trainer.fit_loop.epoch_loop.batch_progress.current.ready
            key = (self.seed * 1_000_003 + trainer.current_epoch) * 1_000_003 + step
            key = key * 1_009 + trainer.global_rank
            gen = torch.Generator(images.device).manual_seed(key % 2**63)
            images = self.augment(images, gen)
        augment.on_device(self, images.device)
        return augment.normalize(images, self.mean, self.std), labels
