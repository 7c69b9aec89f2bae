"""What every image DataModule has, owned once: ``ImageDataModule``.

A DataModule of this project describes its data (``num_classes``, ``in_chans``,
``image_size``, ``classes``, ``mean`` and ``std`` on the 0-255 scale), gives batches of
uint8 images sharded over the processes and resumable mid-epoch (``ShardedBatches``),
and normalises them on the device after the transfer, where the copy is a quarter of
the bytes of float images.

``augment(images, generator)`` is one thing in every DataModule: the data set's
training augmentation applied to a whole uint8 batch on the device. DataModules that
train with it (CIFAR-10, MNIST) run it after the transfer, seeded by the batch's
position in the run; one that augments in its loader workers (ImageFolder) keeps it as
the batch-wise equivalent, for test-time augmentation. ``tta_augment`` is the hook
test-time augmentation calls: ``augment`` on the normalised batches the network sees.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from cnn_bench.data import augment as batch_ops
from cnn_bench.data.common import default_data_dir
from cnn_bench.data.sampling import ShardedBatches, batch_seed


class ImageDataModule(ShardedBatches, L.LightningDataModule):
    """The base of the image DataModules.

    Subclasses call ``save_hyperparameters()`` (their own arguments become ``hparams``),
    give ``classes``, ``in_chans``, ``image_size``, ``mean`` and ``std``, fill
    ``datasets`` in ``setup`` and build the loaders; they override ``augment`` and,
    when they mix images and labels (mixup, cutmix), ``mix``.
    """

    in_chans: int = 3
    image_size: int
    classes: Sequence[str]
    mean: Tensor
    std: Tensor
    # True: ``augment`` is the training augmentation and runs after the transfer.
    # False: the loader's workers augment, and ``augment`` serves test-time views only.
    augments_on_device: bool = True

    def __init__(
        self, data_dir: str | None, batch_size: int, eval_batch_size: int, split_seed: int
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir or default_data_dir())
        # Plain ints: the parser passes its PositiveInt, and ``ImageClassifier`` scales the
        # learning rate by the global batch it computes from ``batch_size``.
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.split_seed = int(split_seed)
        # The training seed, read in ``setup`` (after ``seed_everything``): it seeds the
        # data order and the augmentation.
        self.seed = 0
        self.datasets: dict[str, Any] = {}

    def save_hyperparameters(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's, with the parser's ``PositiveInt`` and ``NonNegativeInt`` made plain
        ints: yaml (the loggers' hparams.yaml) and weights-only checkpoint loading do not
        know them, and the attributes need no second copy of each argument."""
        kwargs.setdefault("frame", inspect.currentframe().f_back)
        super().save_hyperparameters(*args, **kwargs)
        for key, value in self.hparams.items():
            if isinstance(value, int) and not isinstance(value, bool):
                self.hparams[key] = int(value)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # -- loaders -------------------------------------------------------------------------
    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        """A loader of ``datasets[split]`` through this process's ``batch_sampler``."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        # The test images, unless the DataModule prepares them apart for prediction.
        split = "predict" if "predict" in self.datasets else "test"
        return self._loader(split, self.eval_batch_size, shuffle=False)

    # -- on the device -------------------------------------------------------------------
    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The training augmentation of a uint8 batch on the device; none by default."""
        return images

    def mix(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Mix normalised training images and their labels (mixup, cutmix); none by default."""
        return images, labels

    def tta_augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """``augment`` as a function of normalised batches, for test-time augmentation's
        ``augment`` views: undone normalisation, the augmentation, normalised again."""
        mean = self.mean.to(images.device)[None, :, None, None]
        std = self.std.to(images.device)[None, :, None, None]
        augmented = self.augment(images * std + mean, generator)
        return batch_ops.normalize(augmented, self.mean, self.std)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, Tensor):  # the model summary's example input, already a float
            return batch
        images, labels = batch
        trainer = self.trainer
        training = trainer is not None and trainer.training
        if training and self.augments_on_device:
            # Seeded by position, not by history, so a resumed run augments identically.
            # Each process draws its own crops and flips (the rank is in the seed).
            step = trainer.fit_loop.epoch_loop.batch_progress.current.ready
            key = batch_seed(self.seed, trainer.current_epoch, step, rank=trainer.global_rank)
            images = self.augment(images, torch.Generator(images.device).manual_seed(key))
        batch_ops.on_device(self, images.device)
        images = batch_ops.normalize(images, self.mean, self.std)
        return self.mix(images, labels) if training else (images, labels)
