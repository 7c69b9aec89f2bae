"""Callbacks that keep a run's record: its resolved config, next to its checkpoints."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger


def run_directory(trainer: L.Trainer) -> Path:
    """The folder of this run: ``<save_dir>/<project>/<run id>`` under W&B, where the
    checkpoints go too; else the trainer's log directory."""
    logger = trainer.logger
    if isinstance(logger, WandbLogger):
        return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / str(
            logger.version
        )
    return Path(trainer.log_dir or trainer.default_root_dir)


class RunConfigCallback(SaveConfigCallback):
    """Write the resolved LightningCLI config into the run folder and upload it to W&B.

    The file is the complete config that ``--config`` accepts, so any run can be
    repeated with ``cnn-bench fit --config <run>/config.yaml``.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False  # the shared log dir would be overwritten by every run
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_dir = run_directory(trainer)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "config.yaml"
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True,
                         multifile=False)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(
                    {"cli": self.config.clone().as_dict()}, allow_val_change=True
                )
                logger.experiment.save(str(path), base_path=str(run_dir), policy="now")
