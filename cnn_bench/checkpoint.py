"""Checkpoint files that are never half-written, and never trusted when read.

The new checkpoint is written to a temporary file in the same folder, flushed to disk
with ``fsync``, and only then renamed over ``last.ckpt`` (``cnn_bench.files.atomic_open``):
readers see the old file or the new one. Lightning's own writer also renames a temporary
file, but without the ``fsync`` a power loss or kernel crash soon after can leave the
renamed file empty, and with it no checkpoint at all. A path on another filesystem
(``s3://``, ``gs://``) is read and written through fsspec, as Lightning does.

Reading goes through ``read_checkpoint``: always ``weights_only=True`` (a checkpoint is
data, and loading one must never run code), and a missing, damaged, tampered or foreign
file is a ``CheckpointError`` naming the file and what to do, in one line.
"""

from __future__ import annotations

import inspect
import io
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from fsspec.core import url_to_fs
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from torch import nn

from cnn_bench.files import atomic_open

# What Lightning writes in every checkpoint; a plain ``torch.save(model.state_dict())``
# has neither.
LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version")
# What resuming a run needs beyond the weights (absent with ``save_weights_only``).
TRAINING_KEYS = ("optimizer_states", "loops")
# What to do about a file that is not a usable checkpoint.
USE_A_RUN_CHECKPOINT = "use a .ckpt that cnn-bench fit wrote (runs/.../checkpoints)"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names it and what to do."""


def read_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """The checkpoint at ``path`` (a file, or a URL fsspec can open), loaded with
    ``weights_only=True``, or a CheckpointError.

    ``mmap`` maps the tensors instead of reading them (a cheap look at a large file);
    only files in torch's zip format can be mapped.
    """
    source: Path | io.BytesIO
    if _is_local_file_protocol(path):
        source = path = Path(path)
        if not path.is_file():
            what = "not found"
            if path.exists():  # a FIFO would block torch.load forever
                what = "is a folder, not a file" if path.is_dir() else "is not a regular file"
            raise CheckpointError(f"checkpoint {path} {what}; {USE_A_RUN_CHECKPOINT}")
        mmap = mmap and zipfile.is_zipfile(path)
    else:  # s3://, gs://, ...: read whole through fsspec, as Lightning reads them
        fs, inside = url_to_fs(str(path))
        if not fs.isfile(inside):
            raise CheckpointError(f"checkpoint {path} not found; {USE_A_RUN_CHECKPOINT}")
        source, mmap = io.BytesIO(fs.cat_file(inside)), False
    try:
        checkpoint = torch.load(source, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: {_refusal(err)}; {USE_A_RUN_CHECKPOINT}") from None
    # Whatever else torch.load raises on a damaged file (EOFError when empty, RuntimeError
    # from the zip reader when truncated, OSError when unreadable) is about the file too.
    except Exception as err:
        reason = str(err).split(". ")[0] or type(err).__name__
        raise CheckpointError(
            f"{path} is damaged or not a checkpoint ({reason}); {USE_A_RUN_CHECKPOINT}"
        ) from None
    if (
        not isinstance(checkpoint, dict)
        or not all(k in checkpoint for k in LIGHTNING_KEYS)
        or not isinstance(checkpoint["state_dict"], dict)
    ):
        raise CheckpointError(f"{path}: {_not_lightning(checkpoint)}; {USE_A_RUN_CHECKPOINT}")
    return checkpoint


def _refusal(err: pickle.UnpicklingError) -> str:
    """Why ``weights_only`` loading refused a file, without torch's advice to turn it off."""
    wanted = re.search(r"GLOBAL (\S+)", str(err))
    if wanted:
        return (
            f"refused: it asks for {wanted[1]}, which a cnn-bench checkpoint never holds (it "
            "may have been tampered with, or was written by other code)"
        )
    return "not a checkpoint (its bytes are not a torch.save file)"


def _not_lightning(checkpoint: Any) -> str:
    if (
        isinstance(checkpoint, dict)
        and checkpoint
        and all(isinstance(v, torch.Tensor) for v in checkpoint.values())
    ):
        return (
            "a plain state_dict (torch.save(model.state_dict())), not a Lightning checkpoint "
            "with the architecture and training state"
        )
    return f"a {type(checkpoint).__name__} without {' and '.join(LIGHTNING_KEYS)}, not a checkpoint"


def check_hyper_parameters(
    checkpoint: dict[str, Any], model_class: type, path: str | os.PathLike
) -> None:
    """A CheckpointError when the checkpoint's hyper-parameters are not ``model_class``'s
    arguments: a checkpoint of another LightningModule, whose weights cannot fit."""
    known = inspect.signature(model_class).parameters
    hparams = checkpoint.get("hyper_parameters") or {}
    foreign = sorted(k for k in hparams if k not in known and not str(k).startswith("_"))
    if foreign:
        raise CheckpointError(
            f"{path} was written by another model, not {model_class.__name__} (its "
            f"hyper-parameters {', '.join(map(str, foreign[:5]))} are not "
            f"{model_class.__name__}'s); {USE_A_RUN_CHECKPOINT}"
        )


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def check_fits(checkpoint: dict[str, Any], model: nn.Module, path: str | os.PathLike) -> None:
    """A CheckpointError unless ``checkpoint``'s weights fit ``model`` name for name and
    shape for shape: what strict loading would find, said in one line before any data is
    read."""
    expected, given = model.state_dict(), checkpoint["state_dict"]
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    other_shape = [
        f"{k} {_shape(given[k])} instead of {_shape(expected[k])}"
        for k in expected
        if k in given and _shape(given[k]) != _shape(expected[k])
    ]
    if not (missing or unexpected or other_shape):
        return
    problems = [
        f"{len(keys)} {what} (e.g. {keys[0]})"
        for keys, what in (
            (missing, "weights missing"),
            (unexpected, "unexpected weights"),
            (other_shape, "of another shape"),
        )
        if keys
    ]
    arch = (checkpoint.get("hyper_parameters") or {}).get("arch")
    of = f"a checkpoint of {arch}" if arch else "a checkpoint"
    raise CheckpointError(
        f"{path} is {of} that does not fit this model: {', '.join(problems)}; give the "
        "config it was trained with (its run's config.yaml) or a checkpoint of this model"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, with the file flushed to disk before its rename on a
    local disk and every load weights-only (``read_checkpoint``).

    Any other path (``s3://``, ``gs://``, whatever fsspec knows) is written by Lightning's
    own fsspec writer: an object store shows an object only once its upload is whole, so
    there is no half-written file to guard against, and no rename to make.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # weights_only=True whatever is asked: loading a checkpoint must never run code.
        return read_checkpoint(path, map_location=map_location)
