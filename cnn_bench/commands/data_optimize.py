"""``cnn-bench data-optimize TREE OUT``: an ImageFolder tree as litdata chunks, to stream.

TREE is the tree the ImageFolder DataModule reads (``TREE/train/<class>/...`` and
``TREE/val/<class>/...``); OUT, a local folder or a bucket URL (``s3://bucket/prefix``),
receives the three splits that DataModule makes of it, as ``data/streaming.py`` lays them
out: each image's file bytes unchanged (no second JPEG encoding, no loss), its label and
its path in the tree. The classes and the seeded hold-out are the DataModule's own
(``ImageNetDataModule.split_files``), so ``--data.format litdata`` trains and validates
on the files ``--data.format folder`` would.

Every image is decoded once on the way: one that cannot be is named on its own line
and left out, and the summary counts them. Exit status 0: chunks written; 2: TREE is not
a usable tree, or OUT already holds chunks (``--overwrite``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch

from cnn_bench.data import streaming
from cnn_bench.data.common import DataError
from cnn_bench.data.decode import MAX_PIXELS, UnreadableImage

PROG = "cnn-bench data-optimize"


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def encoded_sample(item: tuple[str, int, str], max_pixels: int) -> Iterator[dict[str, Any]]:
    """One stored sample per readable image, none for a file that cannot be decoded (its
    reason goes to stderr, one line, from the litdata worker that met it).

    The path is stored as bytes: litdata stores a string that names an existing file as
    that file's contents."""
    path, label, relative = item
    try:
        data = Path(path).read_bytes()
        streaming.decode_bytes(data, max_pixels)
    except (UnreadableImage, OSError) as err:
        print(f"skipped {path}: {str(err) or type(err).__name__}", file=sys.stderr, flush=True)
        return
    yield {"image": data, "label": label, "path": relative.encode("utf-8")}


def _stored(output_dir: str) -> int:
    """Images in the chunks litdata wrote to ``output_dir`` (0 when it wrote none)."""
    try:
        index = streaming.read_json(streaming.join(output_dir, "index.json"))
    except (OSError, ValueError):
        return 0
    return sum(chunk["chunk_size"] for chunk in index["chunks"])


def _optimize(
    litdata: Any,
    files: list[Path],
    labels: list[int],
    tree: Path,
    output_dir: str,
    args: argparse.Namespace,
) -> None:
    """One split's chunks, written by litdata's workers in the order of ``files``."""
    litdata.optimize(
        fn=partial(encoded_sample, max_pixels=args.max_pixels),
        inputs=[
            (str(f), label, f.relative_to(tree).as_posix())
            for f, label in zip(files, labels, strict=True)
        ],
        output_dir=output_dir,
        chunk_bytes=args.chunk_bytes,
        num_workers=args.workers,
        # The seeded order of the evaluation splits is kept, so that a run limited to a
        # few validation batches still sees every class.
        reorder_files=False,
        keep_data_ordered=True,
        mode="overwrite" if args.overwrite else None,
        verbose=False,
        # Workers forked from this process start at once; spawned ones would import
        # torch again, seconds each, for every split.
        start_method="fork",
    )


def _holds_chunks(out: str) -> bool:
    manifest = streaming.join(out, streaming.MANIFEST)
    if not streaming.is_remote(out):
        return os.path.exists(manifest)
    with contextlib.suppress(OSError, ValueError):
        streaming.read_json(manifest)
        return True
    return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write an ImageFolder tree (TREE/train/<class>/..., TREE/val/<class>/...) "
        "as litdata chunks in OUT, for --data.format litdata: the train split less the "
        "seeded hold-out, the hold-out, and the test split, with each image's file bytes "
        "unchanged.",
    )
    parser.add_argument("tree", type=Path, help="the ImageFolder tree (its splits' parent)")
    parser.add_argument("out", help="where the chunks go: a folder, or s3://bucket/prefix")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes reading and checking images (default: up to 8)",
    )
    parser.add_argument(
        "--chunk-bytes",
        default="64MB",
        help="the size of a chunk file (default 64MB: one read of a bucket or disk per chunk)",
    )
    parser.add_argument("--train-split", default="train", help="the training split's folder")
    parser.add_argument("--test-split", default="val", help="the test split's folder")
    parser.add_argument("--class-list", default=None, help="file fixing class order and names")
    parser.add_argument(
        "--val-per-class", type=int, default=10, help="training images per class held out"
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the hold-out")
    parser.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS, help="larger images are skipped as broken"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace chunks already in OUT")
    return parser


def _split_files(args: argparse.Namespace) -> tuple[Any, dict[str, tuple[list[Path], list[int]]]]:
    """The DataModule of TREE and its splits' files, with the warnings of the scan (a FIFO
    named like an image, a link back into the tree) as one line each."""
    from cnn_bench.data.imagefolder import ImageNetDataModule

    tree = args.tree.resolve()
    dm = ImageNetDataModule(
        data_dir=str(tree.parent),
        folder=tree.name,
        train_split=args.train_split,
        test_split=args.test_split,
        class_list=args.class_list,
        val_per_class=args.val_per_class,
        split_seed=args.split_seed,
        max_pixels=args.max_pixels,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = dm.split_files()
    for warning in caught:
        print(f"{PROG}: {warning.message}", file=sys.stderr)
    return dm, splits


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.workers < 1:
        return _error(f"--workers must be at least 1, not {args.workers}")
    if args.val_per_class < 1:
        return _error("--val-per-class must be at least 1: the hold-out is the validation split")
    try:
        import litdata
    except ImportError:
        return _error(streaming.INSTALL)
    if not args.tree.is_dir():
        return _error(f"{args.tree} is not a folder: give the tree holding {args.train_split}/")
    try:
        dm, splits = _split_files(args)
    except DataError as err:
        return _error(str(err))
    if _holds_chunks(args.out) and not args.overwrite:
        return _error(f"{args.out} already holds chunks: pass --overwrite to replace them")

    tree = args.tree.resolve()
    out = args.out if streaming.is_remote(args.out) else os.path.abspath(args.out)
    # The DataModule's splits -> their folders in OUT, named after the tree's.
    folders = {
        "train": f"{args.train_split}_fit",
        "val": f"{args.train_split}_holdout",
        "test": args.test_split,
    }
    manifest: dict[str, Any] = {
        "layout": streaming.LAYOUT_VERSION,
        "tree": str(tree),
        "classes": dm.folders,
        "names": dm.classes,
        "val_per_class": args.val_per_class,
        "split_seed": args.split_seed,
        "train_split": args.train_split,
        "test_split": args.test_split,
        "splits": {},
    }
    skipped = 0
    for split, folder in folders.items():
        files, labels = splits[split]
        if split == "train":
            # Stored in a seeded random order, not class by class: litdata shuffles the
            # chunks and then windows of a chunk's items, so a batch is drawn from one
            # chunk and a sorted split would give batches of one or two classes.
            gen = torch.Generator().manual_seed(args.split_seed)
            order = torch.randperm(len(files), generator=gen).tolist()
            files, labels = [files[i] for i in order], [labels[i] for i in order]
        output_dir = streaming.join(out, folder)
        print(f"{PROG}: {split} ({folder}): {len(files):,} files", file=sys.stderr)
        try:
            _optimize(litdata, files, labels, tree, output_dir, args)
        except Exception as err:
            # litdata's and the bucket clients' errors (a bucket that is not there, no
            # credentials) have no common class; the user needs the one line, not its stack.
            return _error(f"writing {output_dir} failed: {type(err).__name__}: {err}")
        stored = _stored(output_dir)
        skipped += len(files) - stored
        manifest["splits"][split] = {
            "folder": folder,
            "images": stored,
            "skipped": len(files) - stored,
        }
    streaming.write_json(streaming.join(out, streaming.MANIFEST), manifest)
    counts = ", ".join(
        f"{entry['folder']} {entry['images']:,}" for entry in manifest["splits"].values()
    )
    print(f"wrote {args.out}: {len(dm.folders)} classes; {counts} images")
    if skipped:
        print(f"skipped {skipped} unreadable files (named above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
