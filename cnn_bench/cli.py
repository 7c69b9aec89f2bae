"""``cnn-bench``: the LightningCLI entry point, plus a few tools that are not training runs.

``cnn-bench fit|validate|test|predict`` train and evaluate; the defaults come from
``configs/trainer/default.yaml`` and any ``--config`` files given after them.
``cnn-bench models`` (and the other names in ``TOOLS``) run a tool instead.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cnn_bench.callbacks import NonFiniteLossError, RunConfigCallback
from cnn_bench.data.common import DataError
from cnn_bench.models.registry import UnknownModelError
from cnn_bench.module import ImageClassifier
from cnn_bench.runs import dataset_name

# The DataModules restore their position inside an epoch themselves (their state_dict is
# in every checkpoint), which this Lightning warning does not know about.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "trainer" / "default.yaml"

# Subcommands that are tools rather than Lightning runs: name -> module with main(argv) -> int.
TOOLS = {
    "models": "cnn_bench.commands.models",
    "bench": "cnn_bench.commands.bench",
    "data-check": "cnn_bench.commands.data_check",
    "report": "cnn_bench.commands.report",
    "seeds": "cnn_bench.commands.seeds",
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


def _resume_last_run(config: Namespace) -> None:
    """``--ckpt_path last``: continue the latest run of this architecture under the same
    W&B run id (or the run given by ``--trainer.logger.init_args.id``), so checkpoints,
    config and W&B history stay in one place. With nothing to resume, start afresh: a
    scheduler's first start and its requeues can then use the same command."""
    logger = config.trainer.logger
    if not _is_wandb(logger):
        return  # Lightning resolves "last" among the checkpoint callbacks' folders
    project_dir = Path(logger.init_args.save_dir) / str(logger.init_args.project)
    wanted = logger.init_args.get("id") or "*"
    candidates = [
        p
        for p in project_dir.glob(f"{wanted}/checkpoints/last.ckpt")
        if _run_arch(p.parents[1] / "config.yaml") == config.model.arch
    ]
    if not candidates:
        print(
            f"cnn-bench: no last.ckpt of {config.model.arch} under {project_dir}: starting a "
            "new run",
            file=sys.stderr,
        )
        config.ckpt_path = None
        return
    last = max(candidates, key=lambda p: p.stat().st_mtime)
    config.ckpt_path = str(last)
    logger.init_args.id = last.parents[1].name
    logger.init_args.resume = "allow"
    print(f"cnn-bench: resuming run {logger.init_args.id} from {last}", file=sys.stderr)


def _run_arch(config_file: Path) -> str | None:
    if not config_file.is_file():
        return None
    return (yaml.safe_load(config_file.read_text()) or {}).get("model", {}).get("arch")


def _name_and_tags(config: Any) -> tuple[str, list[str]]:
    """``<arch>-<dataset>-s<seed>`` and the tags ``[arch, dataset, seed<seed>]``."""
    module, _, cls = str(config.data.class_path).rpartition(".")
    data = dataset_name(
        getattr(importlib.import_module(module), cls), config.data.init_args.get("name")
    )
    arch = str(config.model.arch).replace("/", "-")  # timm/<name>: no slash in a run name
    seed = config.seed_everything
    if isinstance(seed, bool):  # false: not seeded
        return f"{arch}-{data}", [arch, data]
    return f"{arch}-{data}-s{seed}", [arch, data, f"seed{seed}"]


class CNNBenchCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Given once, by the data: the model never repeats what the data set defines.
        for key in ("num_classes", "in_chans", "image_size"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit only: test the best checkpoint when training ends, in the same run",
        )

    def before_instantiate_classes(self) -> None:
        _wandb_offline_without_credentials()
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.logger
        if _is_wandb(logger) and logger.init_args.get("save_dir") in (None, "."):
            # Unset (WandbLogger says "."): runs go under $WANDB_DIR when set, else runs/,
            # the W&B files and the checkpoints together.
            logger.init_args.save_dir = os.environ.get("WANDB_DIR", "runs")
        if self.subcommand == "fit" and config.ckpt_path == "last":
            _resume_last_run(config)
        if _is_wandb(logger):
            name, tags = _name_and_tags(config)
            if not logger.init_args.get("name"):
                logger.init_args.name = name
            if not logger.init_args.get("tags"):
                logger.init_args.tags = tags
        # Default callbacks that would contradict a switch turned off: drop them.
        unwanted = []
        if config.trainer.enable_progress_bar is False:
            unwanted.append("ProgressBar")
        if config.trainer.logger in (False, None):
            unwanted.append("LearningRateMonitor")
        config.trainer.callbacks = [
            c
            for c in config.trainer.callbacks or []
            if not any(str(c.class_path).endswith(name) for name in unwanted)
        ]

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit:
            return
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        # Without a saved checkpoint (fast_dev_run) the weights at the end of training.
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def cli(args: list[str] | None = None, run: bool = True) -> CNNBenchCLI:
    defaults = [str(DEFAULT_CONFIG)] if DEFAULT_CONFIG.is_file() else []
    return CNNBenchCLI(
        ImageClassifier,
        L.LightningDataModule,
        subclass_mode_data=True,
        save_config_callback=RunConfigCallback,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        # Without subcommands (run=False) there is one parser, which takes the defaults.
        parser_kwargs=(
            {
                cmd: {"default_config_files": defaults}
                for cmd in ("fit", "validate", "test", "predict")
            }
            if run
            else {"default_config_files": defaults}
        ),
        args=args,
        run=run,
    )


def main(argv: list[str] | None = None) -> None:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in TOOLS:
        sys.exit(importlib.import_module(TOOLS[words[0]]).main(words[1:]))
    try:
        cli(argv)
    except (DataError, UnknownModelError, NonFiniteLossError) as err:
        print(f"cnn-bench: error: {err}", file=sys.stderr)
        sys.exit(2)
    except SIGTERMException as err:  # SaveOnPreemption saved last.ckpt and wrote the message
        print(f"cnn-bench: {err}", file=sys.stderr)
        sys.exit(0)


if __name__ == "__main__":
    main()
