"""Errors a user causes (bad data, files, names or values) end in one line, no traceback:
which exceptions those are, how to find one that jsonargparse wrapped, and a parser whose
errors are one ``cnn-bench: error: ...`` line instead of usage and a tip."""

from __future__ import annotations

import re
import sys
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from cnn_bench.callbacks import NonFiniteLossError
from cnn_bench.checkpoint import CheckpointError
from cnn_bench.config_files import ConfigError
from cnn_bench.data.common import DataError
from cnn_bench.ensemble import EnsembleError
from cnn_bench.models.pretrained import PretrainedError
from cnn_bench.models.registry import ModelArgumentError, UnknownModelError
from cnn_bench.schedules import ScheduleLengthError

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


def one_line(message: str) -> str:
    """A message of several lines (jsonargparse nests its reasons) as one line."""
    return " ".join(message.split())


def user_error_in(err: BaseException) -> BaseException | None:
    """The first of USER_ERRORS in ``err``'s chain of causes, if any."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, USER_ERRORS):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


class OneLineParser(LightningArgumentParser):
    """Parse errors in one line, ``cnn-bench: error: ...``, instead of usage and a tip."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error:  # a nested parse whose error jsonargparse handles
            return super().error(message, ex)
        # jsonargparse cannot say this for an ``int | None`` target; it can for ``int``.
        linked = re.match(r"argument (\S+) --> (\S+): .* is not callable", message)
        if linked:
            message = f'Linked "{linked[2]}" must be given via "{linked[1]}".'
        command = (getattr(ex, "subcommand_parser", None) or self).prog.split()[-1]
        command = command if command in LightningCLI.subcommands() else "<command>"
        print(
            f"cnn-bench: error: {innermost(one_line(message))} (`cnn-bench {command} --help` "
            "lists the options)",
            file=sys.stderr,
        )
        sys.exit(2)


_UNION = r'Parser key "([^"]+)": Does not validate against any of the Union subtypes.*? Errors: - '


def innermost(message: str) -> str:
    """jsonargparse lists every type of a Union it tried, nested; the reason worth a line
    is the one of the class given (``class_path``) and of the type that is not None."""
    given_class = re.match(
        _UNION + r"Problem with given class_path '[^']+': Parser key "
        r'"([^"]+)": (.*)$',
        message,
    )
    if given_class:
        outer, inner, rest = given_class.groups()
        return innermost(f'Parser key "{outer}.{inner}": {rest}')
    optional = re.match(
        _UNION + r"(.*?) - Expected a <class 'NoneType'> Given value type: <[^>]*> "
        r"Given value: (.*?)(?: - Expected a |$)",
        message,
    )
    if optional:
        return f'Parser key "{optional[1]}": {optional[2]}; given {optional[3]}'
    return message.split(" - Expected a ")[0]
