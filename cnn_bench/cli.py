"""``cnn-bench``: the LightningCLI entry point, plus a few tools that are not training runs.

``cnn-bench fit|validate|test|predict`` train and evaluate; the defaults come from
``configs/trainer/default.yaml`` and any ``--config`` files given after them.
``cnn-bench models`` (and the other names in ``TOOLS``) run a tool instead.

Beside it: ``config_files`` (where the shipped configs are, checks on a user's),
``default_callbacks`` (every run's callbacks, by name), ``run_naming`` (a run's name, its
W&B folders, which run ``--ckpt_path last`` continues) and ``user_errors`` (which errors
end in one line, and the parser that prints them so).
"""

from __future__ import annotations

from cnn_bench.sigterm import stop_cleanly_on_sigterm

if __name__ == "__main__":  # before the imports below, which take seconds
    stop_cleanly_on_sigterm()

import argparse
import importlib
import logging
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cnn_bench import run_naming
from cnn_bench.callbacks import RunConfigCallback
from cnn_bench.checkpoint import (
    TRAINING_KEYS,
    CheckpointError,
    check_fits,
    check_hyper_parameters,
    read_checkpoint,
)

# CONFIG_DIR and DEFAULT_CONFIG are imported from here by the bench tools (and users).
from cnn_bench.config_files import CONFIG_DIR as CONFIG_DIR
from cnn_bench.config_files import DEFAULT_CONFIG as DEFAULT_CONFIG
from cnn_bench.config_files import (
    ConfigError,
    check_config_file,
    config_files,
    default_config_files,
)
from cnn_bench.default_callbacks import add_default_callbacks, switched_off
from cnn_bench.module import ImageClassifier
from cnn_bench.runs import last_checkpoint_path
from cnn_bench.user_errors import USER_ERRORS, OneLineParser, one_line, user_error_in

# Lightning's own deprecation of its pytree helper, and its advertisement on every run:
# neither is about anything a run of cnn_bench can change.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip")
)

# The DataModules restore their position inside an epoch themselves (their state_dict is
# in every checkpoint), which this Lightning warning does not know about.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")

# Lightning's subcommands, and the tools that are not Lightning runs: name -> (module with
# main(argv) -> int, what it does). Both lists make up --help.
RUNS = {
    "fit": "train a model (--config configs/experiment/<name>.yaml)",
    "validate": "evaluate a checkpoint on the validation split (--ckpt_path)",
    "test": "evaluate a checkpoint on the test split (--ckpt_path)",
    "predict": "classify your own images (--ckpt_path X --images DIR), or the test split",
}
TOOLS = {
    "models": ("cnn_bench.commands.models", "every registered network with parameters and FLOPs"),
    "bench": (
        "cnn_bench.commands.bench",
        "speed: framework overhead, data path, throughput, time to accuracy",
    ),
    "data-check": (
        "cnn_bench.commands.data_check",
        "read every image of an ImageFolder tree, report classes and bad files",
    ),
    "data-optimize": (
        "cnn_bench.commands.data_optimize",
        "an ImageFolder tree as litdata chunks (local or s3://) to stream",
    ),
    "report": ("cnn_bench.commands.report", "Markdown table and PNG plots of local runs"),
    "seeds": (
        "cnn_bench.commands.seeds",
        "train and test a config with several seeds: mean, std, 95% interval",
    ),
    "study": (
        "cnn_bench.commands.study",
        "run a study (configs/studies/): a grid of runs over seeds, its table and figures",
    ),
    "export": (
        "cnn_bench.commands.export",
        "a checkpoint's network as ONNX, TorchScript or torch.export, with a parity check",
    ),
    "lr-find": (
        "cnn_bench.commands.lr_find",
        "learning-rate range test of a config: the curve and a suggested rate",
    ),
    "gpu-check": (
        "cnn_bench.commands.gpu_check",
        "on a GPU: precisions, channels_last, compile, host syncs, DDP, time to 94%",
    ),
}


# ``--ckpt_path`` words that Lightning resolves to a file itself; the file it finds is
# read through AtomicCheckpointIO, which refuses a bad one in one line too.
CKPT_KEYWORDS = ("last", "best", "hpc", "registry")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the command list (the epilog) kept as written."""


def commands_help() -> str:
    """Every subcommand, the tools included: for ``--help`` and the no-subcommand message."""
    lines = ["commands:"]
    lines += [f"  {name:<13} {text}" for name, text in RUNS.items()]
    lines += [f"  {name:<13} {text}" for name, (_, text) in TOOLS.items()]
    lines.append("`cnn-bench <command> --help` for the options of one.")
    return "\n".join(lines)


def _fit_precision_to_gpu(trainer: Namespace) -> None:
    """bf16 where the GPU computes in it, else 16-mixed (bf16 is emulated, and slow, on
    GPUs before Ampere, e.g. a T4); TF32 matrix products on GPUs that have them."""
    if not torch.cuda.is_available() or trainer.accelerator == "cpu":
        return
    torch.set_float32_matmul_precision("high")
    precision = str(trainer.precision)
    if precision.startswith("bf16") and torch.cuda.get_device_capability() < (8, 0):
        trainer.precision = precision.replace("bf16", "16")
        print(
            f"cnn-bench: {torch.cuda.get_device_name()} has no bf16 arithmetic: "
            f"precision {trainer.precision} instead of {precision}",
            file=sys.stderr,
        )


class CNNBenchCLI(LightningCLI):
    # (path, checkpoint) of the last --ckpt_path read, until the checks before the run.
    _checkpoint: tuple[Any, Any] = (None, None)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        add_default_callbacks(parser)
        # Given once, by the data: the model never repeats what the data set defines.
        for key in ("num_classes", "in_chans", "image_size"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")
        parser.add_argument(
            "--experiment",
            type=str | None,
            default=None,
            help="the experiment's name (default: the last --config file's stem); "
            "--ckpt_path last resumes only runs of the same experiment",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit only: test the best checkpoint when training ends, in the same run",
        )

    def before_instantiate_classes(self) -> None:
        run_naming.wandb_offline_without_credentials()
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("experiment") is None:
            config.experiment = run_naming.experiment_name(config)
        _fit_precision_to_gpu(config.trainer)
        logger = config.trainer.logger
        if run_naming.is_wandb(logger):
            run_naming.place_wandb_files(logger, config.trainer.default_root_dir)
        if config.get("weights_only") is False:
            raise ConfigError(
                "--weights_only false is refused: a checkpoint is always loaded with "
                "weights_only=True, so that loading one cannot run code; drop the option"
            )
        if self.subcommand == "fit" and config.ckpt_path == "last":
            run_naming.resume_last_run(config)
        if run_naming.is_wandb(logger):
            run_naming.name_wandb_run(logger, config, self.subcommand)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:
            # jsonargparse wraps what a class raises in its own ValueError: the project's
            # one-line error is the reason to show.
            cause = user_error_in(err)
            if cause is None:
                raise
            raise cause from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Lightning's, less the callbacks a trainer switch turned off (named or listed)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        off = switched_off(config.trainer)
        keys = self._parser(self.subcommand).callback_keys
        named = [self._get(self.config_init, k) for k in keys]
        named = [c for c in named if not isinstance(c, off)]
        trainer = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        trainer["callbacks"] = [c for c in trainer.get("callbacks") or [] if not isinstance(c, off)]
        return self._instantiate_trainer(trainer, named)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Lightning reads the checkpoint's hyper-parameters next, with torch.load: a bad
        # file is refused here first, in one line.
        self._read_checkpoint()

    def _read_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint ``--ckpt_path`` names (read once, its tensors mapped, not
        loaded), or None for none or a word Lightning resolves itself (``last``)."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path is None or path in CKPT_KEYWORDS or "://" in str(path):
            return None
        if self._checkpoint[0] != path:
            checkpoint = read_checkpoint(path, mmap=True)
            check_hyper_parameters(checkpoint, ImageClassifier, path)
            self._checkpoint = (path, checkpoint)
        return self._checkpoint[1]

    def _check_checkpoint(self) -> None:
        """``--ckpt_path`` (``last`` resolved) before any data is read: a file without
        training state to resume, or whose weights do not fit the model, ends in one line."""
        checkpoint = self._read_checkpoint()
        if checkpoint is None:
            return
        path = self.config[self.subcommand].ckpt_path
        if self.subcommand == "fit" and not all(k in checkpoint for k in TRAINING_KEYS):
            raise CheckpointError(
                f"{path} holds weights only (save_weights_only), no optimizer or loop state "
                "to resume from; evaluate it with validate/test/predict, or resume from a "
                "full checkpoint such as last.ckpt"
            )
        if getattr(self.model, "strict_loading", True):
            check_fits(checkpoint, self.model, path)
        self._checkpoint = (None, None)  # the trainer loads it again, for good

    def before_fit(self) -> None:
        self._check_checkpoint()
        self._fit_started = time.perf_counter()

    def before_validate(self) -> None:
        self._check_checkpoint()

    def before_test(self) -> None:
        self._check_checkpoint()

    def before_predict(self) -> None:
        self._check_checkpoint()

    def after_fit(self) -> None:
        seconds = time.perf_counter() - self._fit_started
        if self.trainer.is_global_zero:
            print(_fit_summary(self.trainer, seconds), file=sys.stderr)
        if not self.config.fit.test_after_fit:
            return
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        # Without a saved checkpoint (fast_dev_run) the weights at the end of training.
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        if self.trainer.is_global_zero and results and "test/acc1" in results[0]:
            what = f"the best checkpoint ({Path(best).name})" if best else "the last weights"
            line = f"cnn-bench: test top-1 of {what}: {100 * results[0]['test/acc1']:.2f}%"
            if "test/tta_acc1" in results[0]:
                line += f", {100 * results[0]['test/tta_acc1']:.2f}% with test-time augmentation"
            print(line, file=sys.stderr)


def _fit_summary(trainer: L.Trainer, seconds: float) -> str:
    """One line at the end of fit: best val/acc1 and its epoch, both checkpoints, wall time."""
    checkpoint = trainer.checkpoint_callback
    parts = []
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if best and checkpoint.best_model_score is not None:
        epoch = torch.load(best, map_location="cpu", mmap=True, weights_only=True).get("epoch")
        parts.append(
            f"best {checkpoint.monitor} {float(checkpoint.best_model_score):.4f} at epoch {epoch}"
            f" ({best})"
        )
    last = last_checkpoint_path(trainer)
    if last is not None and last.is_file():
        parts.append(f"last {last}")
    minutes, secs = divmod(round(seconds), 60)
    parts.append(f"{trainer.global_step} steps in {minutes}m{secs:02d}s")
    return "cnn-bench: fit done: " + "; ".join(parts)


class _ParseOnly(CNNBenchCLI):
    """The CLI up to the parsed config: nothing is built, nothing is changed."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def resolved_config(args: list[str]) -> dict[str, Any]:
    """The config ``cnn-bench fit ARGS`` would run with (defaults, recipes and every
    ``--config`` applied), without building the model, the data or the trainer."""
    return cli(args, run=False, cli_class=_ParseOnly).config.as_dict()


def cli(
    args: list[str] | None = None, run: bool = True, cli_class: type[CNNBenchCLI] = CNNBenchCLI
) -> CNNBenchCLI:
    defaults = default_config_files()
    return cli_class(
        ImageClassifier,
        L.LightningDataModule,
        subclass_mode_data=True,
        save_config_callback=RunConfigCallback,
        save_config_kwargs={"overwrite": True},
        parser_class=OneLineParser,
        auto_configure_optimizers=False,
        # Without subcommands (run=False) there is one parser, which takes the defaults.
        parser_kwargs=(
            {cmd: {"default_config_files": defaults} for cmd in RUNS}
            | {"epilog": commands_help(), "formatter_class": _HelpFormatter}
            if run
            else {"default_config_files": defaults}
        ),
        args=args,
        run=run,
    )


def main(argv: list[str] | None = None) -> None:
    stop_cleanly_on_sigterm()
    words = sys.argv[1:] if argv is None else argv
    if not words:
        print("usage: cnn-bench <command> [options]\n" + commands_help(), file=sys.stderr)
        sys.exit(2)
    try:
        # A tool's user errors (a bad checkpoint given to export) end in one line too.
        if words[0] in TOOLS:
            sys.exit(importlib.import_module(TOOLS[words[0]][0]).main(words[1:]))
        if words[0] == "predict" and any(w.split("=")[0] == "--images" for w in words):
            # Your own image files: no data set, no Trainer (cnn_bench/commands/predict.py).
            sys.exit(importlib.import_module("cnn_bench.commands.predict").main(words[1:]))
        for path in config_files(words):
            check_config_file(path)
        cli(argv)
    except USER_ERRORS as err:
        # Under DDP every process meets the same error: the user reads it once.
        if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
            print(f"cnn-bench: error: {one_line(str(err))}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:
        # The reader left (`cnn-bench models | head`): end quietly, as `ls | head` does.
        # stdout goes to /dev/null so that the flush at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except SIGTERMException as err:  # SaveOnPreemption saved last.ckpt and wrote the message
        # The work is saved: a second SIGTERM while the process shuts down (W&B finishing)
        # must not turn the exit into a kill. Python resets its own handlers to the default
        # at finalization, but not an ignored signal.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
            print(f"cnn-bench: {err}", file=sys.stderr)
        sys.exit(0)


if __name__ == "__main__":
    main()
