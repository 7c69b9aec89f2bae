"""Which run this is, and where W&B puts it: the run's name and tags, its W&B folders,
offline logging without credentials, and which earlier run ``--ckpt_path last`` continues.

Everything here edits the parsed config before any class is built (the CLI's
``before_instantiate_classes``).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

from cnn_bench.config_files import DEFAULT_CONFIG
from cnn_bench.runs import CONFIG_FILE, dataset_name


def wandb_offline_without_credentials() -> None:
    """Never prompt for a W&B login: with no credentials, log offline (``wandb sync`` later)."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    os.environ["WANDB_MODE"] = "offline"


def is_wandb(logger: object) -> bool:
    return str(getattr(logger, "class_path", "")).endswith("WandbLogger")


def resume_last_run(config: Namespace) -> None:
    """``--ckpt_path last``: continue the latest run of *this* experiment (same experiment
    name, data set and architecture; or the run given by ``--trainer.logger.init_args.id``)
    under the same W&B run id, so checkpoints, config and W&B history stay in one place.
    With nothing to resume, start afresh: a scheduler's first start and its requeues can
    then use the same command."""
    logger = config.trainer.logger
    if not is_wandb(logger):
        return  # Lightning resolves "last" among the checkpoint callbacks' folders
    project_dir = Path(logger.init_args.save_dir) / str(logger.init_args.project)
    wanted = logger.init_args.get("id") or "*"
    this = run_identity(config.as_dict())
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


def run_identity(config: dict[str, Any]) -> tuple[Any, Any, Any]:
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
    return run_identity(config)


def experiment_name(config: Namespace) -> str | None:
    """The stem of the last ``--config`` file that is not a run's own ``config.yaml`` (an
    experiment's recipe comes before the experiment, so the experiment names the run)."""
    names = [Path(str(c)).stem for c in config.get("config") or []]
    names = [n for n in names if n != Path(CONFIG_FILE).stem and n != DEFAULT_CONFIG.stem]
    return names[-1] if names else None


def name_and_tags(config: Any) -> tuple[str, list[str]]:
    """``<arch>-<dataset>-s<seed>`` and the tags ``[arch, dataset, seed<seed>]``."""
    data = _data_name(str(config.data.class_path), config.data.init_args)
    arch = str(config.model.arch).replace("/", "-")  # timm/<name>: no slash in a run name
    seed = config.seed_everything
    if isinstance(seed, bool):  # false: not seeded
        return f"{arch}-{data}", [arch, data]
    return f"{arch}-{data}-s{seed}", [arch, data, f"seed{seed}"]


def name_wandb_run(logger: Namespace, config: Namespace, subcommand: str | None) -> None:
    """The run's name, tags and job type, unless the user gave them."""
    name, tags = name_and_tags(config)
    if subcommand not in (None, "fit"):
        name = f"{name}-{subcommand}"  # an evaluation, not the training run
    if not logger.init_args.get("name"):
        logger.init_args.name = name
    if not logger.init_args.get("tags"):
        logger.init_args.tags = tags
    if not logger.init_args.get("job_type"):
        logger.init_args.job_type = subcommand or "fit"


def place_wandb_files(logger: Namespace, default_root_dir: str | None) -> None:
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
