"""ImageNet (ILSVRC-2012, Russakovsky et al. 2015) and any other tree of images in class folders.

The layout is torchvision's ImageFolder, one folder per class in each split::

    <data_dir>/imagenet/train/n01440764/n01440764_10026.JPEG
    <data_dir>/imagenet/val/n01440764/ILSVRC2012_val_00000293.JPEG

Class indices follow the sorted folder names (or the order of a class-list file),
the same in both splits. A seeded validation split of ``val_per_class`` images per
class is held out of ``train/`` for model selection; ``val/`` is the test set.

Files are decoded and cropped in DataLoader workers (torchvision.io, transforms.v2
on uint8: a quarter of the bytes of float images to collate and copy); normalisation
and mixup/cutmix run on the device. A file that cannot be decoded is skipped with a
warning that names it, and each pass over the data ends with the count.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from cnn_bench.data import augment
from cnn_bench.data.common import DataError, default_data_dir
from cnn_bench.data.decode import MAX_PIXELS, UnreadableImage, decode_rgb, is_image_file
from cnn_bench.data.sampling import ShardedBatches, ShardSampler, keep_batch_count

# ImageNet's per-channel statistics on the 0-255 scale (torchvision's reference recipe).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

Split = Literal["train", "val", "test", "predict"]


class UnreadableImageWarning(UserWarning):
    """An image file that was skipped because it cannot be decoded."""


# -- the tree ----------------------------------------------------------------------------
def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".")


def class_folders(split_dir: Path) -> list[str]:
    """The class folders of a split, sorted; hidden folders are not classes."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} is not a folder: it should hold one folder per class")
    with os.scandir(split_dir) as entries:
        return sorted(e.name for e in entries if e.is_dir() and _visible(e))


def image_files(class_dir: Path) -> list[Path]:
    """Every image file under a class folder, nested folders included, in sorted order;
    hidden files and folders and other extensions are ignored.

    Only regular files count: a FIFO, socket or device named ``x.jpg`` would block or
    stream forever when read, so it is skipped with a warning. Linked folders are
    followed (a class folder may live elsewhere on disk), except a link back into the
    tree: to a folder already walked, to one of its parents (a loop) or to another
    class of the split, any of which would repeat images or give them the wrong label.
    """
    split_dir = os.path.realpath(class_dir.parent)
    here = os.path.realpath(class_dir)
    walked = {here}
    found = []
    for root, dirs, files in os.walk(class_dir, followlinks=True):
        kept = []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            real = os.path.realpath(os.path.join(root, d))
            into_tree = _inside(real, split_dir) and not _inside(real, here)
            if real in walked or _inside(here, real) or into_tree:
                warnings.warn(
                    f"{Path(root, d)}: a link back into the tree ({real}), not followed",
                    UnreadableImageWarning,
                    stacklevel=2,
                )
                continue
            walked.add(real)
            kept.append(d)
        dirs[:] = kept
        for f in sorted(files):
            path = Path(root, f)
            if not is_image_file(path):
                continue
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)
            except OSError:  # a broken link: kept, so that reading it reports it
                regular = True
            if not regular:
                warnings.warn(
                    f"{path}: not a regular file (a FIFO, socket or device), skipped",
                    UnreadableImageWarning,
                    stacklevel=2,
                )
                continue
            found.append(path)
    return found


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def read_class_list(path: Path) -> tuple[list[str], list[str]]:
    """Folders and human-readable names from a class-list file, in its order.

    One class per line: the folder name, then optionally its name
    (``n01440764 tench, Tinca tinca``, as ImageNet's LOC_synset_mapping.txt).
    """
    if not path.is_file():
        raise DataError(f"class list {path} not found: give --data.class_list a file or null")
    folders, names = [], []
    for line in path.read_text().splitlines():
        if line.strip():
            folder, _, name = line.strip().partition(" ")
            folders.append(folder)
            names.append(name.strip() or folder)
    if len(set(folders)) != len(folders):
        raise DataError(f"class list {path} names a folder more than once")
    return folders, names


def class_difference(name: str, found: list[str], expected: list[str], against: str) -> str | None:
    """What sets the classes of ``name`` apart from those of ``against``; None when equal."""
    extra, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
    if not extra and not missing:
        return None

    def some(xs: list[str]) -> str:
        return ", ".join(xs[:5]) + (f" and {len(xs) - 5} more" if len(xs) > 5 else "")

    parts = [f"{len(extra)} not in {against} ({some(extra)})"] if extra else []
    parts += [f"{len(missing)} missing ({some(missing)})"] if missing else []
    return f"the classes of {name} differ from {against}: {'; '.join(parts)}"


# -- reading files in workers ------------------------------------------------------------
@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


class ImageFiles(Dataset):
    """Image files and labels; ``dataset[i]`` is a transformed uint8 image and its label,
    or ``Skipped`` when the file cannot be decoded."""

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        transform: Callable[[Tensor], Tensor],
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.files = files
        self.labels = labels
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int | Tensor) -> tuple[Tensor, int] | Skipped:
        path = self.files[int(index)]
        try:
            image = decode_rgb(path, self.max_pixels)
        except (UnreadableImage, OSError) as err:
            return Skipped(str(path), str(err) or type(err).__name__)
        return self.transform(image), self.labels[int(index)]


def collate_readable(
    items: list[tuple[Tensor, int] | Skipped],
) -> tuple[Tensor, Tensor, list[Skipped]]:
    """Stack the images that decoded; pass the skipped files on to be reported."""
    good = [item for item in items if not isinstance(item, Skipped)]
    skipped = [item for item in items if isinstance(item, Skipped)]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), skipped
    images = torch.stack([image for image, _ in good])
    return images, torch.tensor([label for _, label in good], dtype=torch.int64), skipped


class ReportingLoader(DataLoader):
    """A DataLoader that warns about each skipped file as its batch arrives and, when
    the pass over the data ends, how many were skipped. The warnings are issued in the
    main process, so none is lost in a worker."""

    def __init__(
        self, *args: Any, split: str = "data", keep_count: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.split = split
        # Training: a batch of nothing but broken files is replaced, not left out, so that
        # every DDP process takes the same number of steps (sampling.keep_batch_count).
        self.keep_count = keep_count
        self.passes = 0
        self.skipped: list[Skipped] = []

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.passes += 1
        self.skipped = []
        try:
            batches = self._reported(super().__iter__())
            if self.keep_count:
                yield from keep_batch_count(batches, lambda batch: len(batch[1]) > 0)
            else:  # a batch of nothing but broken files is left out
                yield from (batch for batch in batches if len(batch[1]))
        finally:
            if self.skipped:
                warnings.warn(
                    f"{self.split} pass {self.passes}: skipped {len(self.skipped)} unreadable "
                    "image files (named above); `cnn-bench data-check` lists them all",
                    UnreadableImageWarning,
                    stacklevel=1,
                )

    def _reported(self, batches: Iterator) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels, skipped in batches:
            for item in skipped:
                warnings.warn(
                    f"skipped {item.path}: {item.reason}", UnreadableImageWarning, stacklevel=1
                )
            self.skipped += skipped
            yield images, labels


# -- the DataModule ----------------------------------------------------------------------
def _shuffled(
    files: list[Path], labels: list[int], gen: torch.Generator
) -> tuple[list[Path], list[int]]:
    """Files in a fixed seeded order, not class by class: ``limit_val_batches`` and
    ``limit_test_batches`` then measure a fair sample of every class."""
    order = torch.randperm(len(files), generator=gen).tolist()
    return [files[i] for i in order], [labels[i] for i in order]


class ImageNetDataModule(ShardedBatches, L.LightningDataModule):
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
        num_workers: decoding processes per training process.
        pin_memory: page-locked batches for faster copies to the GPU.
        persistent_workers: keep the workers between epochs (with ``num_workers`` > 0).
        max_pixels: an image whose header claims more pixels is skipped unread, as a
            broken file (default: PIL's decompression-bomb limit, 89,478,485).

    ``test`` batches are ``eval_resize`` squares rather than ``image_size`` crops, so that
    test-time augmentation can cut five or ten crops from them; ImageClassifier evaluates
    their centre ``image_size`` crop, which is the standard resize-and-centre-crop image.
    """

    in_chans = 3

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
        num_workers: NonNegativeInt = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        max_pixels: PositiveInt = MAX_PIXELS,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if eval_resize < image_size:
            raise DataError(
                f"eval_resize ({eval_resize}) must be at least image_size ({image_size})"
            )
        self.root = Path(data_dir or default_data_dir()) / folder
        self.name = self.root.name  # runs are named after the tree: imagenet, cifar10-jpeg
        # Plain ints: the parser passes its PositiveInt, which would reach the model's
        # hyper-parameters (through the link) and the loggers' hparams.yaml, and a
        # checkpoint holding it could not be loaded weights-only.
        self.image_size = int(image_size)
        # As the CIFAR-10 DataModule has them: the module scales the learning rate by the
        # global batch it computes from batch_size (without it, to zero).
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.mean = torch.tensor(IMAGENET_MEAN)
        self.std = torch.tensor(IMAGENET_STD)
        self.seed = 0
        self.datasets: dict[str, ImageFiles] = {}
        self.mix = self._mixing(mixup_alpha, cutmix_alpha)

    # -- classes ---------------------------------------------------------------------------
    @cached_property
    def _classes(self) -> tuple[list[str], list[str]]:
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

    @property
    def num_classes(self) -> int:
        return len(self.folders)

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

    def _transforms(self) -> dict[str, v2.Transform]:
        h = self.hparams
        train = [v2.RandomResizedCrop(h.image_size, scale=tuple(h.scale), antialias=True)]
        train += [v2.RandomHorizontalFlip()] if h.flip else []
        if h.color_jitter:
            train.append(v2.ColorJitter(h.color_jitter, h.color_jitter, h.color_jitter))
        policy = {"trivial": v2.TrivialAugmentWide, "rand": v2.RandAugment}.get(h.auto_augment)
        train += [policy()] if policy else []
        if h.random_erasing:
            # The mean colour, which is what erasing to zero after normalisation gives.
            fill = [round(m) for m in IMAGENET_MEAN]
            train.append(v2.RandomErasing(h.random_erasing, value=fill))
        resize = v2.Resize(h.eval_resize, antialias=True)
        return {
            "train": v2.Compose(train),
            "val": v2.Compose([resize, v2.CenterCrop(h.image_size)]),
            "test": v2.Compose([resize, v2.CenterCrop(h.eval_resize)]),
            "predict": v2.Compose([resize, v2.CenterCrop(h.image_size)]),
        }

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.seed = torch.initial_seed() % 2**31
        transforms = self._transforms()
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
        limit = int(self.hparams.max_pixels)
        self.datasets["train"] = ImageFiles(*train, transforms["train"], limit)
        self.datasets["val"] = ImageFiles(*_shuffled(*val, gen), transforms["val"], limit)
        test_files, test_labels = [], []
        for label, files in enumerate(self._split_files(self.hparams.test_split)):
            test_files += files
            test_labels += [label] * len(files)
        self.datasets["test"] = ImageFiles(
            *_shuffled(test_files, test_labels, gen), transforms["test"], limit
        )
        self.datasets["predict"] = ImageFiles(test_files, test_labels, transforms["predict"], limit)

    # -- loaders ---------------------------------------------------------------------------
    def _loader(self, split: Split, batch_size: int, shuffle: bool) -> ReportingLoader:
        # Whole training batches only: a last batch of a few images would be a noisy step.
        sampler = self.batch_sampler(
            len(self.datasets[split]), batch_size, train=shuffle, drop_last=shuffle
        )
        workers = self.hparams.num_workers
        return ReportingLoader(
            self.datasets[split],
            batch_sampler=sampler,
            collate_fn=collate_readable,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.hparams.persistent_workers and workers > 0,
            split=split,
            keep_count=shuffle,
        )

    def train_dataloader(self) -> ReportingLoader:
        return self._loader("train", self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> ReportingLoader:
        return self._loader("val", self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> ReportingLoader:
        return self._loader("test", self.hparams.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> ReportingLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        workers = self.hparams.num_workers
        return ReportingLoader(
            self.datasets["predict"],
            sampler=ShardSampler(len(self.datasets["predict"]), rank, world),
            batch_size=self.hparams.eval_batch_size,
            collate_fn=collate_readable,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory and torch.cuda.is_available(),
            split="predict",
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
        """The training augmentation on a batch on the device (test-time augmentation views):
        random resized crops of the test squares, and flips."""
        images = augment.random_resized_crop(
            images, self.image_size, tuple(self.hparams.scale), generator
        )
        return augment.random_flip(images, generator) if self.hparams.flip else images

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, Tensor):  # the model summary's example input, already a float
            return batch
        images, labels = batch
        augment.on_device(self, images.device)
        images = augment.normalize(images, self.mean, self.std)
        trainer = self.trainer
        if self.mix and trainer is not None and trainer.training:
            # Soft labels from here on: cross-entropy takes them, accuracy takes their argmax.
            mix = self.mix[int(torch.randint(len(self.mix), ()))]
            images, labels = mix(images, torch.nn.functional.one_hot(labels, self.num_classes))
        return images, labels
