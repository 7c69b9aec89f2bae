"""What every DataModule shares: the data root and the one-line data error."""

from __future__ import annotations

import os


class DataError(RuntimeError):
    """Data that is missing or unusable; the message says what to do."""


def default_data_dir() -> str:
    """``$CNN_BENCH_DATA`` when set, else ``./data``."""
    return os.environ.get("CNN_BENCH_DATA", "./data")
