"""Checkpoint files that are never half-written, even when the machine goes down.

The new checkpoint is written to a temporary file in the same folder, flushed to disk
with ``fsync``, and only then renamed over ``last.ckpt`` (``cnn_bench.files.atomic_open``):
readers see the old file or the new one. Lightning's own writer also renames a temporary
file, but without the ``fsync`` a power loss or kernel crash soon after can leave the
renamed file empty, and with it no checkpoint at all.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from cnn_bench.files import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)
