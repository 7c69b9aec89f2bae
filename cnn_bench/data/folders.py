"""The folder scan of an ImageFolder tree, shared by the DataModule and ``data-check``.

One folder per class in each split; class indices follow the sorted folder names or a
class-list file. The scan finds every image file under a class folder and refuses what
would block, loop or mislabel: FIFOs, sockets and devices named like images, and links
back into the tree.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from cnn_bench.data.common import DataError
from cnn_bench.data.decode import is_image_file


class UnreadableImageWarning(UserWarning):
    """An image file that was skipped because it cannot be decoded."""


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
