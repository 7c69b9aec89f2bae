"""``cnn-bench data-check DIR``: read every image of a tree before anyone trains on it.

DIR is a tree of splits (``DIR/train/<class>/...``, ``DIR/val/<class>/...``) or one split
(``DIR/<class>/...``). Every image is decoded as training would decode it; the report
gives the images per class, each unreadable file with the reason, and image sizes.
Exit status 0: usable; 1: something is not (unreadable files, classes without images,
splits whose classes differ); 2: DIR is not a tree of images.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cnn_bench.data.common import DataError
from cnn_bench.data.decode import UnreadableImage, decode_rgb, is_image_file
from cnn_bench.data.folders import class_difference, class_folders, image_files

# Classes listed one per line up to this many; above it, the fewest and the most.
LIST_CLASSES = 30


@dataclass
class SplitReport:
    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    ignored: int = 0


def _check(path: Path) -> tuple[int, int] | str:
    """(width, height) of a readable image, else why it is not."""
    try:
        image = decode_rgb(path)
    except (UnreadableImage, OSError) as err:
        return str(err) or type(err).__name__
    return image.shape[2], image.shape[1]


def _splits(root: Path) -> list[Path]:
    """The splits under DIR: DIR itself when its folders hold images, else its folders."""
    children = [root / name for name in class_folders(root)]
    if any(is_image_file(f) for child in children for f in child.iterdir()):
        return [root]
    return [c for c in children if class_folders(c)]


def _count_ignored(split: Path) -> int:
    ignored = 0
    for _, dirs, files in os.walk(split):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        ignored += sum(not is_image_file(Path(f)) for f in files)
    return ignored


def check_split(split: Path, pool: ProcessPoolExecutor | None) -> SplitReport:
    report = SplitReport(split, ignored=_count_ignored(split))
    files = {name: image_files(split / name) for name in class_folders(split)}
    every = [f for fs in files.values() for f in fs]
    results = dict(
        zip(
            every,
            pool.map(_check, every, chunksize=64) if pool else map(_check, every),
            strict=True,
        )
    )
    for name, class_files in files.items():
        readable = 0
        for f in class_files:
            if isinstance(results[f], str):
                report.bad.append((f, results[f]))
            else:
                report.sizes.append(results[f])
                readable += 1
        report.counts[name] = readable
    return report


def _print_split(report: SplitReport) -> list[str]:
    """Print one split's report; return its problems."""
    counts, problems = report.counts, []
    print(f"{report.path}: {len(counts)} classes, {sum(counts.values()):,} readable images")
    if len(counts) <= LIST_CLASSES:
        width = max(map(len, counts), default=0)
        for name, n in counts.items():
            print(f"  {name:<{width}}  {n:>7,}")
    else:
        by_count = sorted(counts, key=counts.get)
        print(
            f"  images per class: fewest {counts[by_count[0]]:,} ({by_count[0]}), "
            f"median {statistics.median(counts.values()):,.0f}, "
            f"most {counts[by_count[-1]]:,} ({by_count[-1]})"
        )
    if report.sizes:
        widths, heights = zip(*report.sizes, strict=True)
        print(
            "  image size (width x height): "
            f"min {min(widths)} x {min(heights)}, "
            f"median {statistics.median(widths):.0f} x {statistics.median(heights):.0f}, "
            f"max {max(widths)} x {max(heights)}"
        )
    if report.ignored:
        print(
            f"  ignored: {report.ignored} hidden files or files that are not images by their name"
        )
    if report.bad:
        print(
            f"  unreadable: {len(report.bad)} files (training skips them: delete or replace them)"
        )
        for path, reason in report.bad:
            print(f"    {path}: {reason}")
        problems.append(f"{len(report.bad)} unreadable files in {report.path}")
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        problems.append(
            f"{len(empty)} classes without a readable image in {report.path}: "
            + ", ".join(empty[:10])
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cnn-bench data-check",
        description="Read every image of a tree of class folders and report what training "
        "would find: images per class, unreadable files, image sizes.",
    )
    parser.add_argument(
        "dir",
        type=Path,
        help="a tree of splits (DIR/train/<class>/...) or one split (DIR/<class>/...)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="decoding processes (default: up to 8)",
    )
    args = parser.parse_args(argv)
    try:
        splits = _splits(args.dir)
    except DataError as err:
        print(f"cnn-bench data-check: error: {err}", file=sys.stderr)
        return 2
    if not splits:
        print(
            f"cnn-bench data-check: error: {args.dir} holds no class folders of images",
            file=sys.stderr,
        )
        return 2
    with (
        ProcessPoolExecutor(args.workers) if args.workers > 1 else contextlib.nullcontext() as pool
    ):
        reports = [check_split(split, pool) for split in splits]
    problems = []
    for report in reports:
        problems += _print_split(report)
    first = reports[0]
    for report in reports[1:]:
        difference = class_difference(
            str(report.path), list(report.counts), list(first.counts), str(first.path)
        )
        problems += [difference] if difference else []
    if problems:
        print("NOT USABLE: " + "; ".join(problems))
        return 1
    print(
        f"OK: {len(splits)} split{'s' * (len(splits) > 1)}, "
        f"{len(first.counts)} classes, every image readable"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
