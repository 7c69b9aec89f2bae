"""Small data sets held in memory as uint8 (CIFAR-10, MNIST): one ``setup`` for all.

A seeded validation split of ``val_size`` images is held out of the training files;
of the rest, ``train_subset`` images (class-balanced) are trained on, with
``label_noise`` of their labels replaced by another class (``data/subsets.py``). The
official test images are used only by ``test``. Batches are gathered from memory an
index tensor at a time (``TensorBatches``) and augmented on the device.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from cnn_bench.data.base import ImageDataModule
from cnn_bench.data.common import DataError
from cnn_bench.data.sampling import TensorBatches, whole_batch
from cnn_bench.data.subsets import balanced_subset, noisy_labels


class InMemoryImageDataModule(ImageDataModule):
    """The base of the in-memory DataModules: subclasses read their files
    (``read_split``), name the missing ones (``missing_files``) and say in
    ``prepare_data`` what to do about them. Their ``hparams`` hold ``val_size``,
    ``train_subset``, ``label_noise`` and ``test_size``."""

    def read_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """Images as uint8 ``N x C x H x W`` and int64 labels of the training or test files."""
        raise NotImplementedError

    def missing_files(self) -> list[str]:
        raise NotImplementedError

    # What prepare_data says and does when files are missing: the data set's title, the
    # folder under data_dir, where to put it, and the torchvision class that downloads it.
    title: str
    folder: Path | str
    hint: str
    torchvision_class: str

    def prepare_data(self) -> None:
        missing = self.missing_files()
        if not missing:
            return
        where = self.data_dir.resolve() / self.folder
        if not self.hparams.download:
            raise DataError(
                f"{self.title} not found in {where} (missing {', '.join(missing)}): set "
                f"--data.data_dir or $CNN_BENCH_DATA to the folder holding {self.hint}, "
                "or pass --data.download true"
            )
        import torchvision.datasets

        try:
            getattr(torchvision.datasets, self.torchvision_class)(str(self.data_dir), download=True)
        except Exception as err:  # any network or archive failure: say it in one line
            raise DataError(
                f"could not download {self.title} into {where} ({type(err).__name__}: {err}); "
                "copy the files there by hand and run again"
            ) from None

    def check_subsets(self) -> None:
        """Refuse a label-noise fraction outside 0..1 when the DataModule is built, not
        after the data is read."""
        noise = self.hparams.label_noise
        if not 0.0 <= noise <= 1.0:
            raise DataError(f"label_noise must be a fraction between 0 and 1, got {noise}")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.missing_files():
            self.prepare_data()  # a rank that skipped prepare_data still gets the clear error
        self.seed = torch.initial_seed() % 2**31
        h = self.hparams
        images, labels = self.read_split(train=True)
        if not 0 <= h.val_size < len(labels):
            raise DataError(f"val_size must be between 0 and {len(labels) - 1}, got {h.val_size}")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(h.split_seed))
        self.val_indices, self.train_indices = order[: h.val_size], order[h.val_size :]
        if h.train_subset is not None:
            # Drawn from what is left once validation is held out: the two never overlap.
            kept = balanced_subset(
                labels[self.train_indices], int(h.train_subset), self.num_classes, h.split_seed
            )
            self.train_indices = self.train_indices[kept]
        train_labels = labels[self.train_indices]
        if h.label_noise:
            train_labels = noisy_labels(train_labels, h.label_noise, self.num_classes, h.split_seed)
        self.datasets["train"] = TensorBatches(images[self.train_indices], train_labels)
        self.datasets["val"] = TensorBatches(images[self.val_indices], labels[self.val_indices])
        test_images, test_labels = self.read_split(train=False)
        keep = slice(h.test_size)
        self.datasets["test"] = TensorBatches(test_images[keep], test_labels[keep])
        # Normalised with the statistics of the images trained on.
        train_images = self.datasets["train"].images.float()
        self.mean = train_images.mean(dim=(0, 2, 3))
        self.std = train_images.std(dim=(0, 2, 3))

    # -- loaders -------------------------------------------------------------------------
    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        sampler = self.batch_sampler(len(self.datasets[split]), batch_size, train=shuffle)
        # The sampler yields whole index batches, the dataset gathers each in one go.
        return DataLoader(self.datasets[split], batch_sampler=sampler, collate_fn=whole_batch)
