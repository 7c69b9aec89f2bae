"""Files that are never half-written: a run's checkpoints and records.

The new content goes to a temporary file in the same folder, is flushed to disk with
``fsync``, and only then renamed over the old file (``os.replace``, atomic on POSIX):
a reader, ``cnn-bench report`` or a resume, sees the old file or the new one, never a
truncated one, also after a crash, a kill or a full disk in the middle of the write.
Without the ``fsync`` a power loss soon after the rename can leave the new name empty.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """``open(path, mode)`` for writing (``"w"`` or ``"wb"``) that replaces ``path`` only
    when the block ends without an error; on an error the old file stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a run's files are not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``Path(path).write_text(text)``, atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)
