"""ImageNet (ILSVRC-2012, Russakovsky et al. 2015) and any other tree of images in class folders.

The layout is torchvision's ImageFolder, one folder per class in each split::

    <data_dir>/imagenet/train/n01440764/n01440764_10026.JPEG
    <data_dir>/imagenet/val/n01440764/ILSVRC2012_val_00000293.JPEG

Class indices follow the sorted folder names (or the order of a class-list file),
the same in both splits. A seeded validation split of ``val_per_class`` images per
class is held out of ``train/`` for model selection; ``val/`` is the test set.

Files are decoded and cropped in DataLoader workers (torchvision.io, transforms.v2
on uint8: a quarter of the bytes of float images to collate and copy; training JPEGs
decoded at a reduced size where the crop allows: ``data/crop_decode.py``); normalisation
and mixup/cutmix run on the device. A file that cannot be decoded is skipped with a
warning that names it, and each pass over the data ends with the count.

``format: litdata`` reads the same splits from chunk files instead, on a local disk or
in a bucket, streamed to every process and node (``data/streaming.py``); ``cnn-bench
data-optimize TREE OUT`` writes them from the tree.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import Tensor
from torchvision.transforms import v2

from cnn_bench.data import augment, streaming
from cnn_bench.data.base import ImageDataModule
from cnn_bench.data.common import DataError
from cnn_bench.data.crop_decode import CropDecoder
from cnn_bench.data.decode import MAX_PIXELS

# The folder scan and the file dataset live in their own modules; their names stay
# importable from here, where earlier versions defined them.
from cnn_bench.data.folders import (
    UnreadableImageWarning,
    class_difference,
    class_folders,
    image_files,
    read_class_list,
)
from cnn_bench.data.image_files import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFiles,
    ReportingLoader,
    Skipped,
    collate_readable,
    imagenet_after_crop,
    imagenet_transforms,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageFiles",
    "ImageNetDataModule",
    "ReportingLoader",
    "Skipped",
    "UnreadableImageWarning",
    "class_difference",
    "class_folders",
    "collate_readable",
    "image_files",
    "read_class_list",
]


def _shuffled(
    files: list[Path], labels: list[int], gen: torch.Generator
) -> tuple[list[Path], list[int]]:
    """Files in a fixed seeded order, not class by class: ``limit_val_batches`` and
    ``limit_test_batches`` then measure a fair sample of every class."""
    order = torch.randperm(len(files), generator=gen).tolist()
    return [files[i] for i in order], [labels[i] for i in order]


class ImageNetDataModule(ImageDataModule):
    """ImageNet, or any ImageFolder tree, with the standard ImageNet augmentation.

    Args:
        data_dir: folder holding ``folder``; defaults to ``$CNN_BENCH_DATA``, else ``./data``.
        folder: the tree inside ``data_dir`` (an absolute path works too).
        train_split: the training split's folder in the tree.
        test_split: the split used by ``test`` and ``predict`` (ImageNet's ``val``).
        class_list: optional file fixing the class order and names (one ``folder name``
            per line), relative to the tree or absolute; default: sorted folder names.
        val_per_class: training images per class held out for validation (seeded).
        split_seed: seed of that hold-out, independent of the training seed.
        batch_size: training images per step and process.
        eval_batch_size: images per validation/test step and process.
        image_size: side of the training crop and of the evaluation centre crop.
        eval_resize: shorter side images are resized to before the centre crop.
        scale: area range of RandomResizedCrop, as fractions of the image.
        flip: random horizontal flip.
        color_jitter: brightness, contrast and saturation jitter strength (0: off).
        auto_augment: ``trivial`` (TrivialAugmentWide, Muller & Hutter 2021) or ``rand``
            (RandAugment, Cubuk et al. 2020) policy on each training image.
        random_erasing: probability of erasing a random rectangle (Zhong et al. 2020).
        mixup_alpha: Beta(alpha, alpha) mixing of image pairs (Zhang et al. 2018); 0: off.
        cutmix_alpha: CutMix (Yun et al. 2019) with Beta(alpha, alpha) areas; 0: off. With
            both on, each batch uses one of the two at random.
        fast_decode: training crops sampled from the JPEG header and decoded at 1/2, 1/4 or
            1/8 size where the crop still keeps at least ``image_size`` pixels on both
            sides (``CropDecoder``), then resized; the same crops as ``RandomResizedCrop``
            on the whole decoded image, for less work on large photos. False: every file
            decoded whole, then cropped. Other formats and rotated, grayscale or CMYK
            JPEGs are decoded whole either way; so are litdata chunks (``format``).
        num_workers: decoding processes per training process.
        pin_memory: page-locked batches for faster copies to the GPU.
        persistent_workers: keep the workers between epochs (with ``num_workers`` > 0).
        max_pixels: an image whose header claims more pixels is skipped unread, as a
            broken file (default: PIL's decompression-bomb limit, 89,478,485).
        format: ``folder``: the tree's image files; ``litdata``: the chunks that
            ``cnn-bench data-optimize TREE OUT`` wrote from it, at ``data_dir/folder``
            (a local path or ``s3://bucket/prefix``), streamed (``data/streaming.py``).

    ``test`` batches are ``eval_resize`` squares rather than ``image_size`` crops, so that
    test-time augmentation can cut five or ten crops from them; ImageClassifier evaluates
    their centre ``image_size`` crop, which is the standard resize-and-centre-crop image.
    """

    in_chans = 3
    # Images are cropped and flipped in the loader's workers, one file at a time.
    augments_on_device = False

    def __init__(
        self,
        data_dir: str | None = None,
        folder: str = "imagenet",
        train_split: str = "train",
        test_split: str = "val",
        class_list: str | None = None,
        val_per_class: NonNegativeInt = 10,
        split_seed: int = 0,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt = 100,
        image_size: PositiveInt = 224,
        eval_resize: PositiveInt = 256,
        scale: tuple[float, float] = (0.08, 1.0),
        flip: bool = True,
        color_jitter: float = 0.0,
        auto_augment: Literal["none", "trivial", "rand"] = "none",
        random_erasing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        fast_decode: bool = True,
        num_workers: NonNegativeInt = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        max_pixels: PositiveInt = MAX_PIXELS,
        format: Literal["folder", "litdata"] = "folder",
    ) -> None:
        super().__init__(data_dir, batch_size, eval_batch_size, split_seed)
        self.save_hyperparameters()
        if eval_resize < image_size:
            raise DataError(
                f"eval_resize ({eval_resize}) must be at least image_size ({image_size})"
            )
        self.root = self.data_dir / folder
        # Chunks may be in a bucket, which a Path would mangle (s3:/bucket).
        remote = data_dir is not None and streaming.is_remote(data_dir)
        self.source = streaming.join(data_dir, folder) if remote else str(self.root)
        self.name = Path(self.source).name  # runs are named after the tree: imagenet, cifar10-jpeg
        # A plain int: it reaches the model's hyper-parameters through the link.
        self.image_size = int(image_size)
        self.mean = torch.tensor(IMAGENET_MEAN)
        self.std = torch.tensor(IMAGENET_STD)
        self.mixers = self._mixing(mixup_alpha, cutmix_alpha)

    # -- classes ---------------------------------------------------------------------------
    @cached_property
    def _classes(self) -> tuple[list[str], list[str]]:
        if self.hparams.format == "litdata":
            return streaming.manifest_classes(self.source, self.hparams)
        train = self.root / self.hparams.train_split
        if not train.is_dir():
            raise DataError(
                f"no training images: {train} is not a folder. Lay the data out as "
                f"{self.root}/{{{self.hparams.train_split},{self.hparams.test_split}}}/<class>/"
                "<image>, and set --data.data_dir (or $CNN_BENCH_DATA) and --data.folder"
            )
        found = class_folders(train)
        if not found:
            raise DataError(f"{train} has no class folders")
        if self.hparams.class_list is None:
            return found, found
        folders, names = read_class_list(self.root / self.hparams.class_list)
        problem = class_difference(
            str(train), found, folders, f"class list {self.hparams.class_list}"
        )
        if problem:
            raise DataError(problem)
        return folders, names

    @property
    def folders(self) -> list[str]:
        """Class folder names in class-index order (ImageNet's WordNet ids)."""
        return self._classes[0]

    @property
    def classes(self) -> list[str]:
        """Human-readable class names in class-index order."""
        return self._classes[1]

    # -- files -----------------------------------------------------------------------------
    def _split_files(self, split: str) -> list[list[Path]]:
        """The image files of each class of a split, in class-index order."""
        split_dir = self.root / split
        problem = class_difference(
            str(split_dir),
            class_folders(split_dir),
            self.folders,
            str(self.root / self.hparams.train_split),
        )
        if problem:
            raise DataError(problem)
        return [image_files(split_dir / folder) for folder in self.folders]

    def split_files(self) -> dict[str, tuple[list[Path], list[int]]]:
        """The files and labels of each split: ``train`` less the seeded hold-out, ``val``
        (the hold-out) and ``test`` in a seeded order, ``predict`` (the test files in
        folder order). ``cnn-bench data-optimize`` writes its chunks from these lists, so
        the streamed splits hold the same files as the folder ones."""
        hold_out = self.hparams.val_per_class
        gen = torch.Generator().manual_seed(self.hparams.split_seed)
        train, val = ([], []), ([], [])
        for label, files in enumerate(self._split_files(self.hparams.train_split)):
            if len(files) <= hold_out:
                raise DataError(
                    f"class {self.folders[label]} has {len(files)} training images, too few to "
                    f"hold out val_per_class={hold_out} for validation: add images or lower it"
                )
            order = torch.randperm(len(files), generator=gen).tolist()
            for part, indices in ((val, order[:hold_out]), (train, order[hold_out:])):
                part[0].extend(files[i] for i in sorted(indices))
                part[1].extend([label] * len(indices))
        val = _shuffled(*val, gen)
        test_files, test_labels = [], []
        for label, files in enumerate(self._split_files(self.hparams.test_split)):
            test_files += files
            test_labels += [label] * len(files)
        test = _shuffled(test_files, test_labels, gen)
        return {"train": train, "val": val, "test": test, "predict": (test_files, test_labels)}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.seed = torch.initial_seed() % 2**31
        transforms = imagenet_transforms(self.hparams)
        limit = int(self.hparams.max_pixels)
        if self.hparams.format == "litdata":
            self.datasets.update(streaming.datasets(self.source, transforms, self.seed, limit))
            return
        h = self.hparams
        for split, (files, labels) in self.split_files().items():
            if split == "train" and h.fast_decode:
                # The decoder draws and makes the crop; the rest of the chain follows it.
                crop = CropDecoder(h.image_size, tuple(h.scale))
                self.datasets[split] = ImageFiles(
                    files, labels, imagenet_after_crop(h), limit, crop
                )
            else:
                self.datasets[split] = ImageFiles(files, labels, transforms[split], limit)

    # -- loaders ---------------------------------------------------------------------------
    def _loader(self, split: str, batch_size: int, shuffle: bool) -> ReportingLoader:
        workers = self.hparams.num_workers
        pin = self.hparams.pin_memory and torch.cuda.is_available()
        if self.hparams.format == "litdata":
            persistent = self.hparams.persistent_workers
            world = self.trainer.world_size if self.trainer else 1
            dataset = self.datasets[split]
            return streaming.loader(
                dataset, split, batch_size, shuffle, workers, pin, persistent, world
            )
        # Whole training batches only: a last batch of a few images would be a noisy step.
        sampler = self.batch_sampler(
            len(self.datasets[split]), batch_size, train=shuffle, drop_last=shuffle
        )
        return ReportingLoader(
            self.datasets[split],
            batch_sampler=sampler,
            collate_fn=collate_readable,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=self.hparams.persistent_workers and workers > 0,
            split=split,
            keep_count=shuffle,
        )

    # -- on the device ---------------------------------------------------------------------
    @staticmethod
    def _mixing(mixup_alpha: float, cutmix_alpha: float) -> list[v2.Transform]:
        return [
            kind(alpha=alpha)
            for kind, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha))
            if alpha > 0
        ]

    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The training augmentation as a batch operation on the device: random resized
        crops (of the test squares, for test-time augmentation's views) and flips. Training
        itself crops and flips in the loader's workers."""
        images = augment.random_resized_crop(
            images, self.image_size, tuple(self.hparams.scale), generator
        )
        return augment.random_flip(images, generator) if self.hparams.flip else images

    def mix(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Mixup or cutmix, one of them at random per batch, when either is on."""
        if not self.mixers:
            return images, labels
        # Soft labels from here on: cross-entropy takes them, accuracy takes their argmax.
        mixer = self.mixers[int(torch.randint(len(self.mixers), ()))]
        return mixer(images, torch.nn.functional.one_hot(labels, self.num_classes))
