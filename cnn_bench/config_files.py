"""The config files of a run: where the shipped ones are, and the checks on a user's own.

The YAML files under ``configs/`` ship inside the package (``cnn_bench/configs`` links to
them in a checkout; a wheel holds a copy), so an installed ``cnn-bench`` keeps its
defaults: checkpoints, the W&B logger, the run record.
"""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "trainer" / "default.yaml"


class ConfigError(ValueError):
    """A config the parser accepts but a run cannot use; the message says what to change."""


def default_config_files() -> list[str]:
    """The defaults every run loads first. Without them a run would go on without
    checkpoints, W&B or its record, which nobody asks for: say so instead."""
    if not DEFAULT_CONFIG.is_file():
        raise ConfigError(
            f"the default config {DEFAULT_CONFIG} is missing from this installation of "
            "cnn_bench; reinstall it (pip install cnn_bench, or pip install -e . in a checkout)"
        )
    return [str(DEFAULT_CONFIG)]


def config_files(words: list[str]) -> list[Path]:
    """The files given with ``--config``/``-c`` (a value that is no file is YAML text, which
    the parser reads itself)."""
    values = [b for a, b in zip(words, words[1:], strict=False) if a in ("-c", "--config")]
    values += [w.split("=", 1)[1] for w in words if w.startswith("--config=")]
    return [Path(v) for v in values if Path(v).is_file()]


def check_config_file(path: Path) -> None:
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
