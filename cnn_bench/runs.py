"""Where a run's files are: the one module that answers it for the CLI, the callbacks,
``cnn-bench report`` and ``cnn-bench seeds``.

A run's folder is ``<save_dir>/<project>/<run id>`` under W&B (the checkpoints go there
too), else the trainer's log directory. It holds ``config.yaml`` (the resolved config),
``metrics.json`` (the run's record), ``confusion_matrix.csv``, ``predictions.csv`` (of
``predict``) and ``checkpoints/``.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
CONFUSION_FILE = "confusion_matrix.csv"
PREDICTIONS_FILE = "predictions.csv"
# W&B keeps its own run config as ``config.yaml`` among a run's files; the CLI's file
# is uploaded under another name so that neither replaces the other.
WANDB_CONFIG_NAME = "lightning_config.yaml"


_RUN_DIRECTORIES: weakref.WeakKeyDictionary[L.Trainer, Path] = weakref.WeakKeyDictionary()


def run_directory(trainer: L.Trainer) -> Path:
    """The folder of this run: ``<save_dir>/<project>/<run id>`` under W&B, where the
    checkpoints go too; else the trainer's log directory.

    The first call for a trainer must come from a hook that every process runs (the run
    record's callbacks call it in ``setup``): it agrees on rank zero's folder with a
    broadcast (other ranks have no W&B run, and a CSV logger's next version number
    depends on what rank zero has already created). Later calls, rank zero's writes
    included, return the cached folder and enter no collective.
    """
    if trainer not in _RUN_DIRECTORIES:
        logger = trainer.logger
        if isinstance(logger, WandbLogger):
            folder = str(
                Path(logger.save_dir or trainer.default_root_dir)
                / str(logger.name)
                / str(logger.version)
            )
        else:
            # Trainer.log_dir broadcasts rank zero's value itself.
            folder = trainer.log_dir or trainer.default_root_dir
        _RUN_DIRECTORIES[trainer] = Path(trainer.strategy.broadcast(folder))
    return _RUN_DIRECTORIES[trainer]


def wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def dataset_name(datamodule: type | object, name: str | None = None) -> str:
    """A data set's short name: ``name`` or the DataModule's ``name`` when given, else
    its class name without ``DataModule`` (``CIFAR10DataModule`` -> ``cifar10``)."""
    cls = datamodule if isinstance(datamodule, type) else type(datamodule)
    return (
        name or getattr(datamodule, "name", None) or cls.__name__.removesuffix("DataModule").lower()
    )


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """Where the ``save_last`` checkpoint callback writes ``last.ckpt``."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}.ckpt"
    return None
