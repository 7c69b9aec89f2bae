"""An ImageFolder tree streamed from chunk files (litdata), on a local disk or in a bucket.

``cnn-bench data-optimize TREE OUT`` packs each image's encoded bytes, as they were in
the tree, with its label into litdata chunks (``cnn_bench/commands/data_optimize.py``);
``--data.format litdata`` trains on them. A chunk is tens of megabytes read in one go
instead of one small file per image, and a bucket (``s3://...``) serves it to every node
without a shared file system.

The layout of OUT, and the file that describes it::

    OUT/manifest.json            classes, the hold-out settings, images per split
    OUT/train_fit/               train/ less the seeded hold-out     (DataModule "train")
    OUT/train_holdout/           the hold-out, for model selection   (DataModule "val")
    OUT/val/                     the tree's test split               (DataModule "test")

The hold-out is chosen when the chunks are written, by the ImageFolder DataModule's own
code (``ImageNetDataModule.split_files``), so both formats train and validate on the
same files; the DataModule refuses chunks written with other hold-out settings.

Images are decoded in the loader's workers with the transforms of the folder format;
litdata shards the chunks across processes and nodes (from torch.distributed's rank
and world size), shuffles them each epoch and, through ``StreamingDataLoader``'s
``state_dict``, resumes mid-epoch: Lightning saves a stateful training loader's state
in every checkpoint (the fit loop's ``combined_loader``) and restores it on resume.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from cnn_bench.data.common import DataError
from cnn_bench.data.decode import JPEG_MAGIC, UnreadableImage, _check_header, _decode_pil
from cnn_bench.data.image_files import ReportingLoader, Skipped, collate_readable

MANIFEST = "manifest.json"
# Bumped when the layout of a sample or of OUT changes; older chunks are refused.
LAYOUT_VERSION = 1
INSTALL = 'litdata is not installed: pip install "cnn_bench[stream]" (or pip install litdata)'


def _not_drop_last_advice(record: logging.LogRecord) -> bool:
    return "have disabled the `drop_last` option" not in record.getMessage()


# litdata warns, on every process, that evaluation without drop_last gives processes
# uneven shards: that is intended (every image evaluated once, as the folder format does),
# and evaluation steps hold no collective that a shorter shard would leave waiting.
logging.getLogger("litdata.streaming.dataset").addFilter(_not_drop_last_advice)
# Lightning warns that an IterableDataset's len() may be wrong with several workers unless
# each worker reads its own part: litdata gives each worker its own part and counts it.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


def is_remote(location: str) -> bool:
    """A bucket URL (``s3://``, ``gs://``, ...) rather than a local path."""
    return "://" in location


def join(location: str, *parts: str) -> str:
    """``location/parts`` for a local path and a bucket URL alike."""
    if is_remote(location):
        return "/".join([location.rstrip("/"), *parts])
    return os.path.join(location, *parts)


def decode_bytes(data: bytes | memoryview, max_pixels: int) -> Tensor:
    """An encoded image, as a chunk holds it, as uint8 ``3 x H x W`` RGB: the same decoders,
    header check and pixel limit as ``decode.decode_rgb`` reading the file itself."""
    data = bytes(data)
    if not data:
        raise UnreadableImage("empty file")
    _check_header(data, max_pixels)
    if data.startswith(JPEG_MAGIC):
        try:
            return decode_image(
                torch.frombuffer(bytearray(data), dtype=torch.uint8),
                mode=ImageReadMode.RGB,
                apply_exif_orientation=True,
            )
        except RuntimeError:
            pass  # a JPEG torchvision cannot read: PIL may, and otherwise says why
    # PNG and the rest never reach torchvision, whose libpng can crash the process on a
    # truncated file; PIL reads a file object as it reads a path.
    return _decode_pil(io.BytesIO(data))


# -- the manifest ------------------------------------------------------------------------------
def read_json(location: str) -> Any:
    """A JSON file on the local disk or in a bucket (fetched with litdata's own clients,
    so the credentials and endpoint that stream the chunks read it too)."""
    if not is_remote(location):
        with open(location) as f:
            return json.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(location))
        with _bucket_errors(location):
            provider = _provider(location)
            if not provider.exists(location):
                raise FileNotFoundError(location)
            provider.download_file(location, local)
        with open(local) as f:
            return json.load(f)


def _provider(location: str) -> Any:
    from litdata.streaming.fs_provider import _get_fs_provider

    return _get_fs_provider(location)


@contextmanager
def _bucket_errors(location: str) -> Iterator[None]:
    """A bucket's errors (no credentials, no such bucket, access denied: botocore's and
    the other clients' own classes, none of them an OSError) as OSError, which the
    callers turn into one line."""
    try:
        yield
    except OSError:
        raise
    except Exception as err:
        raise OSError(f"{location}: {type(err).__name__}: {err}") from None


def write_json(location: str, data: Any) -> None:
    """Write ``data`` as JSON to a local path (atomically) or a bucket URL."""
    text = json.dumps(data, indent=1) + "\n"
    folder = tempfile.mkdtemp() if is_remote(location) else os.path.dirname(location) or "."
    local = os.path.join(folder, f".{os.path.basename(location)}.tmp")
    with open(local, "w") as f:
        f.write(text)
    if not is_remote(location):
        os.replace(local, location)
        return
    with _bucket_errors(location):
        _provider(location).upload_file(local, location)
    os.unlink(local)


@lru_cache(maxsize=8)
def read_manifest(source: str) -> dict[str, Any]:
    """OUT/manifest.json of chunks written by ``cnn-bench data-optimize``; a DataError
    that says what to run when there is none."""
    location = join(source, MANIFEST)
    try:
        manifest = read_json(location)
    except FileNotFoundError:
        raise DataError(
            f"no {location}: {source} holds no chunks written by `cnn-bench data-optimize "
            "TREE OUT` (give OUT as --data.data_dir/--data.folder), or set --data.format folder"
        ) from None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {location}: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("layout") != LAYOUT_VERSION:
        raise DataError(
            f"{location} is not a manifest of this version of `cnn-bench data-optimize` "
            f"(layout {LAYOUT_VERSION}): write the chunks again"
        )
    return manifest


def manifest_classes(source: str, hparams: Any) -> tuple[list[str], list[str]]:
    """Class folders and names of the chunks at ``source``, after checking that they were
    written with the DataModule's hold-out settings (else validation would be on
    other files than the folder format's, some of them trained on)."""
    manifest = read_manifest(source)
    if hparams.class_list is not None:
        raise DataError(
            "--data.class_list is for --data.format folder: the chunks' class order was "
            "fixed when they were written (`cnn-bench data-optimize --class-list`)"
        )
    for key in ("val_per_class", "split_seed"):
        if manifest[key] != hparams[key]:
            raise DataError(
                f"the chunks in {source} hold out {key}={manifest[key]}, not the "
                f"--data.{key} {hparams[key]} asked for: pass --data.{key} {manifest[key]}, or "
                f"write them again with `cnn-bench data-optimize --{key.replace('_', '-')}`"
            )
    return list(manifest["classes"]), list(manifest["names"])


# -- datasets and loaders ----------------------------------------------------------------------
class DecodeSample:
    """A stored sample (``image`` bytes, ``label``, ``path``) as the DataModule's item: the
    transformed uint8 image and its label, or ``Skipped`` naming the file it came from.
    A class, not a closure: the loader's workers receive it pickled."""

    def __init__(self, transform: Callable[[Tensor], Tensor], max_pixels: int) -> None:
        self.transform = transform
        self.max_pixels = max_pixels

    def __call__(self, sample: dict[str, Any]) -> tuple[Tensor, int] | Skipped:
        try:
            image = decode_bytes(sample["image"], self.max_pixels)
        except (UnreadableImage, OSError) as err:
            path = bytes(sample["path"]).decode("utf-8", "replace")
            return Skipped(path, str(err) or type(err).__name__)
        return self.transform(image), int(sample["label"])


def datasets(
    source: str, transforms: dict[str, Callable], seed: int, max_pixels: int
) -> dict[str, Any]:
    """A ``StreamingDataset`` per DataModule split of the chunks at ``source``; training
    reshuffles each epoch from ``seed`` (litdata adds the epoch)."""
    try:
        from litdata import StreamingDataset
    except ImportError:
        raise DataError(INSTALL) from None
    stored = read_manifest(source)["splits"]
    stored["predict"] = stored["test"]
    made = {}
    for split, entry in stored.items():
        made[split] = StreamingDataset(
            join(source, entry["folder"]),
            shuffle=split == "train",
            # Training: as many samples on every process (or DDP waits forever at the end of
            # an epoch); evaluation: every image once, none dropped.
            drop_last=split == "train",
            seed=seed,
            transform=DecodeSample(transforms[split], max_pixels),
        )
        # Every process's images together; len() is this process's share.
        made[split].total_images = entry["images"]
    return made


@lru_cache(maxsize=1)
def _streaming_loader_class() -> type:
    """Made on first use: litdata is an optional dependency."""
    from litdata import StreamingDataLoader

    class StreamingImageLoader(ReportingLoader, StreamingDataLoader):
        """litdata's loader (sharding, shuffling, ``state_dict`` for a mid-epoch resume) with
        the folder format's reporting of unreadable images and its steady batch count."""

        def _get_iterator(self) -> Any:
            # litdata's worker iterator holds its loader, and a persistent one is held by
            # it: a loader no longer used is left to the cycle collector, which closes the
            # workers' queues before it shuts them down (ten seconds of timeouts) and, run
            # in a worker forked meanwhile, fails on workers that are not its children (an
            # "AssertionError: can only test a child process" traceback). A weak reference
            # back breaks the cycle, so the loader and its workers go when it is dropped.
            iterator = super()._get_iterator()
            if isinstance(getattr(iterator, "_loader", None), StreamingDataLoader):
                iterator._loader = weakref.proxy(self)
            return iterator

    return StreamingImageLoader


def loader(
    dataset: Any,
    split: str,
    batch_size: int,
    train: bool,
    num_workers: int,
    pin_memory: bool,
    persistent_workers: bool,
    world_size: int = 1,
) -> ReportingLoader:
    """The loader of one split: whole batches in training, every image in evaluation.

    litdata shards evaluation by whole batches, so a split of fewer than one batch per
    process leaves some process none, which Lightning refuses with a traceback on that
    process alone; the same check on every process ends them all in one line instead."""
    images = getattr(dataset, "total_images", None)
    if not train and world_size > 1 and images is not None and images < batch_size * world_size:
        raise DataError(
            f"the {split} split's {images} images are fewer than one evaluation batch "
            f"({batch_size}) for each of the {world_size} processes: give "
            f"--data.eval_batch_size {max(1, images // world_size)} or less"
        )
    return _streaming_loader_class()(
        dataset,
        batch_size=batch_size,
        collate_fn=collate_readable,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        split=split,
        keep_count=train,
    )
