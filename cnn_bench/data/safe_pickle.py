"""Read pickled data set files without executing code from them.

CIFAR's "python version" batches are pickles. ``pickle.load`` would import and call
whatever a file names, so a tampered download could run code. This unpickler admits
only what those files hold: dicts, lists, bytes and numpy arrays.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from cnn_bench.data.common import DataError

# The globals a numpy array pickle needs, under the names numpy 1 and 2 use.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol 2 writes bytes from Python 3: text -> bytes, nothing more
}


class UnsafePickleError(DataError):
    """A pickle asked for something that a data file never needs."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray":  # numpy 2 keeps it in numpy._core
            module = np._core.multiarray.__name__ if hasattr(np, "_core") else module
        return super().find_class(module, name)


def load_pickle(path: str | Path) -> Any:
    """Unpickle a data file, refusing anything but plain containers and numpy arrays."""
    with open(path, "rb") as f:
        try:
            return _DataUnpickler(f, encoding="latin1").load()
        except UnsafePickleError as err:
            raise UnsafePickleError(
                f"{path}: {err}; this is not a plain data file. Delete it and download "
                "the data again from a trusted source."
            ) from None
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            IndexError,
            KeyError,
        ) as err:
            raise DataError(
                f"{path}: unreadable ({type(err).__name__}: {err}); the file is truncated or "
                "not a pickle. Delete it and put the data in place again (make data)."
            ) from None
