"""``cnn-bench``: the LightningCLI entry point, plus a few tools that are not training runs.

``cnn-bench fit|validate|test|predict`` train and evaluate; the defaults come from
``configs/trainer/default.yaml`` and any ``--config`` files given after them.
``cnn-bench models`` (and the other names in ``TOOLS``) run a tool instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from cnn_bench.callbacks import RunConfigCallback
from cnn_bench.data.common import DataError
from cnn_bench.models.registry import UnknownModelError
from cnn_bench.module import ImageClassifier

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "trainer" / "default.yaml"

# Subcommands that are tools rather than Lightning runs: name -> module with main(argv) -> int.
TOOLS = {
    "models": "cnn_bench.commands.models",
    "bench": "cnn_bench.commands.bench",
}


def _wandb_offline_without_credentials() -> None:
    """Never prompt for a W&B login: with no credentials, log offline (``wandb sync`` later)."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    os.environ["WANDB_MODE"] = "offline"


def _is_wandb(logger: object) -> bool:
    return str(getattr(logger, "class_path", "")).endswith("WandbLogger")


class CNNBenchCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Given once, by the data: the model never repeats what the data set defines.
        for key in ("num_classes", "in_chans", "image_size"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        _wandb_offline_without_credentials()
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.logger
        if _is_wandb(logger) and logger.init_args.get("save_dir") in (None, "."):
            # Unset (WandbLogger says "."): runs go under $WANDB_DIR when set, else runs/,
            # the W&B files and the checkpoints together.
            logger.init_args.save_dir = os.environ.get("WANDB_DIR", "runs")
        if config.trainer.enable_progress_bar is False:  # the default bar would contradict it
            config.trainer.callbacks = [
                c for c in config.trainer.callbacks or []
                if not str(c.class_path).endswith("ProgressBar")
            ]


def cli(args: list[str] | None = None, run: bool = True) -> CNNBenchCLI:
    defaults = [str(DEFAULT_CONFIG)] if DEFAULT_CONFIG.is_file() else []
    return CNNBenchCLI(
        ImageClassifier,
        L.LightningDataModule,
        subclass_mode_data=True,
        save_config_callback=RunConfigCallback,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        parser_kwargs={
            cmd: {"default_config_files": defaults} for cmd in ("fit", "validate", "test", "predict")
        },
        args=args,
        run=run,
    )


def main(argv: list[str] | None = None) -> None:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in TOOLS:
        sys.exit(importlib.import_module(TOOLS[words[0]]).main(words[1:]))
    try:
        cli(argv)
    except (DataError, UnknownModelError) as err:
        print(f"cnn-bench: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
