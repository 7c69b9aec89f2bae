"""What every DataModule shares: the data root, the one-line data error, and the
description of the data that a checkpoint carries."""

from __future__ import annotations

import os
from typing import Any


class DataError(RuntimeError):
    """Data that is missing or unusable; the message says what to do."""


def default_data_dir() -> str:
    """``$CNN_BENCH_DATA`` when set, else ``./data``."""
    return os.environ.get("CNN_BENCH_DATA", "./data")


def data_description(datamodule: object) -> dict[str, Any]:
    """What a trained network needs to know of its data to classify a new image: class
    names, input size and channels, the normalisation and the evaluation resize. Saved
    in every checkpoint (``checkpoint["data"]``), so prediction and export need no
    data set."""
    from cnn_bench.runs import dataset_name  # runs imports Lightning; data/ need not

    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    hparams = getattr(datamodule, "hparams", {})
    return {
        "name": dataset_name(datamodule),
        "classes": [str(c) for c in getattr(datamodule, "classes", None) or []],
        "num_classes": getattr(datamodule, "num_classes", None),
        "in_chans": getattr(datamodule, "in_chans", None),
        "image_size": getattr(datamodule, "image_size", None),
        "eval_resize": hparams.get("eval_resize") if hasattr(hparams, "get") else None,
        # On the 0-255 scale of the uint8 images the DataModules normalise.
        "mean": None if mean is None else [float(v) for v in mean],
        "std": None if std is None else [float(v) for v in std],
    }
