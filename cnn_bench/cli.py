"""``cnn-bench``: the LightningCLI entry point, plus a few tools that are not training runs.

``cnn-bench fit|validate|test|predict`` train and evaluate; the defaults come from
``configs/trainer/default.yaml`` and any ``--config`` files given after them.
``cnn-bench models`` (and the other names in ``TOOLS``) run a tool instead.
"""

from __future__ import annotations

from cnn_bench.sigterm import stop_cleanly_on_sigterm

if __name__ == "__main__":  # before the imports below, which take seconds
    stop_cleanly_on_sigterm()

import argparse
import importlib
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cnn_bench.callbacks import NonFiniteLossError, RunConfigCallback
from cnn_bench.checkpoint import (
    TRAINING_KEYS,
    CheckpointError,
    check_fits,
    check_hyper_parameters,
    read_checkpoint,
)
from cnn_bench.data.common import DataError
from cnn_bench.ensemble import EnsembleError
from cnn_bench.models.pretrained import PretrainedError
from cnn_bench.models.registry import ModelArgumentError, UnknownModelError
from cnn_bench.module import ImageClassifier
from cnn_bench.runs import CONFIG_FILE, dataset_name, last_checkpoint_path
from cnn_bench.schedules import ScheduleLengthError

# Lightning's own deprecation of its pytree helper, and its advertisement on every run:
# neither is about anything a run of cnn_bench can change.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip")
)

# The DataModules restore their position inside an epoch themselves (their state_dict is
# in every checkpoint), which this Lightning warning does not know about.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "trainer" / "default.yaml"

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


class ConfigError(ValueError):
    """A config the parser accepts but a run cannot use; the message says what to change."""


# Errors a user causes (bad data, files, names or values): one line each, no traceback.
# Lightning's MisconfigurationException is its own word for a bad trainer setting.
USER_ERRORS = (
    CheckpointError,
    ConfigError,
    DataError,
    EnsembleError,
    MisconfigurationException,
    ModelArgumentError,
    NonFiniteLossError,
    PretrainedError,
    ScheduleLengthError,
    UnknownModelError,
)
# ``--ckpt_path`` words that Lightning resolves to a file itself; the file it finds is
# read through AtomicCheckpointIO, which refuses a bad one in one line too.
CKPT_KEYWORDS = ("last", "best", "hpc", "registry")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the command list (the epilog) kept as written."""


def one_line(message: str) -> str:
    """A message of several lines (jsonargparse nests its reasons) as one line."""
    return " ".join(message.split())


class _Parser(LightningArgumentParser):
    """Parse errors in one line, ``cnn-bench: error: ...``, instead of usage and a tip."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error:  # a nested parse whose error jsonargparse handles
            return super().error(message, ex)
        # jsonargparse cannot say this for an ``int | None`` target; it can for ``int``.
        linked = re.match(r"argument (\S+) --> (\S+): .* is not callable", message)
        if linked:
            message = f'Linked "{linked[2]}" must be given via "{linked[1]}".'
        command = (getattr(ex, "subcommand_parser", None) or self).prog.split()[-1]
        command = command if command in RUNS else "<command>"
        print(
            f"cnn-bench: error: {_innermost(one_line(message))} (`cnn-bench {command} --help` "
            "lists the options)",
            file=sys.stderr,
        )
        sys.exit(2)


_UNION = r'Parser key "([^"]+)": Does not validate against any of the Union subtypes.*? Errors: - '


def _innermost(message: str) -> str:
    """jsonargparse lists every type of a Union it tried, nested; the reason worth a line
    is the one of the class given (``class_path``) and of the type that is not None."""
    given_class = re.match(
        _UNION + r"Problem with given class_path '[^']+': Parser key "
        r'"([^"]+)": (.*)$',
        message,
    )
    if given_class:
        outer, inner, rest = given_class.groups()
        return _innermost(f'Parser key "{outer}.{inner}": {rest}')
    optional = re.match(
        _UNION + r"(.*?) - Expected a <class 'NoneType'> Given value type: <[^>]*> "
        r"Given value: (.*?)(?: - Expected a |$)",
        message,
    )
    if optional:
        return f'Parser key "{optional[1]}": {optional[2]}; given {optional[3]}'
    return message.split(" - Expected a ")[0]


def commands_help() -> str:
    """Every subcommand, the tools included: for ``--help`` and the no-subcommand message."""
    lines = ["commands:"]
    lines += [f"  {name:<11} {text}" for name, text in RUNS.items()]
    lines += [f"  {name:<11} {text}" for name, (_, text) in TOOLS.items()]
    lines.append("`cnn-bench <command> --help` for the options of one.")
    return "\n".join(lines)


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
    """``--ckpt_path last``: continue the latest run of *this* experiment (same experiment
    name, data set and architecture; or the run given by ``--trainer.logger.init_args.id``)
    under the same W&B run id, so checkpoints, config and W&B history stay in one place.
    With nothing to resume, start afresh: a scheduler's first start and its requeues can
    then use the same command."""
    logger = config.trainer.logger
    if not _is_wandb(logger):
        return  # Lightning resolves "last" among the checkpoint callbacks' folders
    project_dir = Path(logger.init_args.save_dir) / str(logger.init_args.project)
    wanted = logger.init_args.get("id") or "*"
    this = _run_identity(config.as_dict())
    candidates = [
        p
        for p in project_dir.glob(f"{wanted}/checkpoints/last.ckpt")
        if _recorded_identity(p.parents[1] / CONFIG_FILE) == this
    ]
    if not candidates:
        print(
            f"cnn-bench: no last.ckpt of experiment {this[0]} ({this[2]} on {this[1]}) under "
            f"{project_dir}: starting a new run",
            file=sys.stderr,
        )
        config.ckpt_path = None
        return
    last = max(candidates, key=lambda p: p.stat().st_mtime)
    config.ckpt_path = str(last)
    logger.init_args.id = last.parents[1].name
    logger.init_args.resume = "allow"
    print(f"cnn-bench: resuming run {logger.init_args.id} from {last}", file=sys.stderr)


def _run_identity(config: dict[str, Any]) -> tuple[Any, Any, Any]:
    """What makes two runs the same experiment: (experiment, data set, architecture)."""
    data = config.get("data") or {}
    where = _data_name(str(data.get("class_path", "")), data.get("init_args") or {})
    return config.get("experiment"), where, (config.get("model") or {}).get("arch")


def _data_name(class_path: str, init_args: Any) -> str:
    """The data set's short name (``cifar10``; an ImageFolder run's folder, ``cifar10-jpeg``)."""
    folder = init_args.get("folder")
    given = init_args.get("name") or (Path(folder).name if folder else None)
    module, _, cls = class_path.rpartition(".")
    try:
        return dataset_name(getattr(importlib.import_module(module), cls), given)
    except (ImportError, AttributeError, ValueError):  # a recorded config of another version
        return given or cls


def _recorded_identity(config_file: Path) -> tuple[Any, Any, Any] | None:
    """The identity recorded in a run's ``config.yaml``; None (with a warning) when the file
    cannot be read, so one damaged run folder does not stop a resume."""
    if not config_file.is_file():
        return None
    try:
        config = yaml.safe_load(config_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"cnn-bench: warning: skipping {config_file}: {reason}", file=sys.stderr)
        return None
    if not isinstance(config, dict):
        print(f"cnn-bench: warning: skipping {config_file}: not a config", file=sys.stderr)
        return None
    return _run_identity(config)


def _experiment_name(config: Namespace) -> str | None:
    """The stem of the last ``--config`` file that is not a run's own ``config.yaml``."""
    names = [Path(str(c)).stem for c in config.get("config") or []]
    names = [n for n in names if n != Path(CONFIG_FILE).stem and n != DEFAULT_CONFIG.stem]
    return names[-1] if names else None


def _name_and_tags(config: Any) -> tuple[str, list[str]]:
    """``<arch>-<dataset>-s<seed>`` and the tags ``[arch, dataset, seed<seed>]``."""
    data = _data_name(str(config.data.class_path), config.data.init_args)
    arch = str(config.model.arch).replace("/", "-")  # timm/<name>: no slash in a run name
    seed = config.seed_everything
    if isinstance(seed, bool):  # false: not seeded
        return f"{arch}-{data}", [arch, data]
    return f"{arch}-{data}-s{seed}", [arch, data, f"seed{seed}"]


def _place_wandb_files(logger: Namespace, default_root_dir: str | None) -> None:
    """W&B files go where the run goes: the logger's ``save_dir`` when given, else
    ``$WANDB_DIR``, else ``--trainer.default_root_dir`` (runs/). W&B's staging and cache
    folders go inside it too, not into the home directory, unless set by the user."""
    if logger.init_args.get("save_dir") in (None, "."):  # unset: WandbLogger says "."
        logger.init_args.save_dir = os.environ.get("WANDB_DIR") or default_root_dir or "runs"
    # Absolute: W&B otherwise takes a relative folder for the git root and warns.
    logger.init_args.save_dir = str(Path(logger.init_args.save_dir).resolve())
    Path(logger.init_args.save_dir).mkdir(parents=True, exist_ok=True)
    wandb_dir = Path(logger.init_args.save_dir) / "wandb"
    for variable, folder in (
        ("WANDB_ARTIFACT_DIR", "artifacts"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"),
    ):
        os.environ.setdefault(variable, str(wandb_dir / folder))


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
        _wandb_offline_without_credentials()
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("experiment") is None:
            config.experiment = _experiment_name(config)
        _fit_precision_to_gpu(config.trainer)
        logger = config.trainer.logger
        if _is_wandb(logger):
            _place_wandb_files(logger, config.trainer.default_root_dir)
        if config.get("weights_only") is False:
            raise ConfigError(
                "--weights_only false is refused: a checkpoint is always loaded with "
                "weights_only=True, so that loading one cannot run code; drop the option"
            )
        if self.subcommand == "fit" and config.ckpt_path == "last":
            _resume_last_run(config)
        if _is_wandb(logger):
            name, tags = _name_and_tags(config)
            if self.subcommand not in (None, "fit"):
                name = f"{name}-{self.subcommand}"  # an evaluation, not the training run
            if not logger.init_args.get("name"):
                logger.init_args.name = name
            if not logger.init_args.get("tags"):
                logger.init_args.tags = tags
            if not logger.init_args.get("job_type"):
                logger.init_args.job_type = self.subcommand or "fit"
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

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:
            # jsonargparse wraps what a class raises in its own ValueError: the project's
            # one-line error is the reason to show.
            cause = _user_error_in(err)
            if cause is None:
                raise
            raise cause from None

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


def _user_error_in(err: BaseException) -> BaseException | None:
    """The first of USER_ERRORS in ``err``'s chain of causes, if any."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, USER_ERRORS):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


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


def _config_files(words: list[str]) -> list[Path]:
    """The files given with ``--config``/``-c`` (a value that is no file is YAML text, which
    the parser reads itself)."""
    values = [b for a, b in zip(words, words[1:], strict=False) if a in ("-c", "--config")]
    values += [w.split("=", 1)[1] for w in words if w.startswith("--config=")]
    return [Path(v) for v in values if Path(v).is_file()]


def _check_config_file(path: Path) -> None:
    """A config file must be a YAML mapping; say which file is not, and where, in one line
    (the parser's own words are "Unexpected config: " for an empty file)."""
    try:
        config = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not text; give a YAML file") from None
    except OSError as err:
        raise ConfigError(f"config {path} cannot be read: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"config {path} is not valid YAML{where}: {problem}") from None
    if config is None:
        raise ConfigError(
            f"config {path} is empty; it should map options to values (model:, data:, trainer:)"
        )
    if not isinstance(config, dict):
        raise ConfigError(
            f"config {path} holds a {type(config).__name__}, not a mapping of options to "
            "values (model:, data:, trainer:)"
        )


def cli(args: list[str] | None = None, run: bool = True) -> CNNBenchCLI:
    defaults = [str(DEFAULT_CONFIG)] if DEFAULT_CONFIG.is_file() else []
    return CNNBenchCLI(
        ImageClassifier,
        L.LightningDataModule,
        subclass_mode_data=True,
        save_config_callback=RunConfigCallback,
        save_config_kwargs={"overwrite": True},
        parser_class=_Parser,
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
        for path in _config_files(words):
            _check_config_file(path)
        cli(argv)
    except USER_ERRORS as err:
        # Under DDP every process meets the same error: the user reads it once.
        if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
            print(f"cnn-bench: error: {one_line(str(err))}", file=sys.stderr)
        sys.exit(2)
    except SIGTERMException as err:  # SaveOnPreemption saved last.ckpt and wrote the message
        if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
            print(f"cnn-bench: {err}", file=sys.stderr)
        sys.exit(0)


if __name__ == "__main__":
    main()
