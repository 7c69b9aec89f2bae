"""Learning-rate schedules that need the run's length, as ``LambdaLR`` subclasses.

``ImageClassifier`` fills ``total_steps`` when it is left out (optimizer steps, or epochs when the
schedule steps per epoch) from the trainer, so a YAML file never repeats it.

A schedule with a ``total_steps`` (these, ``OneCycleLR``) has a fixed length: a run resumed
with a longer budget cannot continue it (``OneCycleLR`` fails at its last step plus one, these
would jump back up the curve), so ``check_resumed_length`` refuses such a resume up front.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class ScheduleLengthError(ValueError):
    """A resumed run's budget differs from the fixed length its schedule was built for."""


def check_resumed_length(scheduler: Any, planned: int | None, checkpoint: str, unit: str) -> None:
    """Refuse a resume whose schedule, restored from ``checkpoint``, was built for another
    length than the ``planned`` one this run's settings give (``unit``: steps or epochs)."""
    saved = getattr(scheduler, "total_steps", None)
    if saved is None or planned is None or saved == planned:
        return
    name = type(scheduler).__name__
    raise ScheduleLengthError(
        f"{checkpoint} was trained with a {name} schedule of {saved} {unit} and this run "
        f"plans {planned}: a {name} schedule's length is fixed, so it cannot be extended or "
        f"shortened. Resume with the budget the run started with (--trainer.max_epochs / "
        f"--trainer.max_steps as before), or start a new run without --ckpt_path"
    )


def bind_run_length(
    schedule: Callable[[Optimizer], Any], total: int, lr_scale: float = 1.0
) -> Callable[[Optimizer], Any]:
    """The schedule of a run: ``total_steps`` left empty (``None``) filled with ``total``,
    the run's length in the schedule's unit, and ``OneCycleLR``'s ``max_lr`` (it sets the
    learning rate itself) scaled like the optimizer's learning rate.

    ``schedule`` is what LightningCLI gives for ``lr_scheduler``: a ``functools.partial`` of
    the class with the YAML's arguments. Anything else is returned unchanged.
    """
    if not isinstance(schedule, functools.partial):
        return schedule
    given = schedule.keywords
    bound: dict[str, Any] = {}
    if "total_steps" in given and given["total_steps"] is None:
        bound["total_steps"] = int(total)
    if given.get("max_lr") is not None:
        bound["max_lr"] = given["max_lr"] * lr_scale
    return functools.partial(schedule, **bound) if bound else schedule


# The notes' decays for ``LambdaLR`` (``lr_lambda``), by epoch (or step) number from 0:
# ``lr_lambda: cnn_bench.schedules.inverse`` in YAML gives C / epoch.
def inverse(epoch: int) -> float:
    """C / t: the learning rate divided by the (1-based) epoch number."""
    return 1.0 / (epoch + 1)


def inverse_sqrt(epoch: int) -> float:
    """C / sqrt(t): the learning rate divided by the square root of the (1-based) epoch."""
    return 1.0 / math.sqrt(epoch + 1)


def _progress(step: int, total_steps: int | None, warmup_steps: int) -> float:
    """Fraction of the post-warmup steps done, in [0, 1]."""
    if total_steps is None:
        raise ValueError("total_steps is unknown: give it, or let ImageClassifier fill it")
    return min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))


class _WarmupLR(LambdaLR):
    """Linear warmup from 0 over ``warmup_steps``, then ``decay(t)`` for t from 0 to 1."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_steps: int = 0,
        min_factor: float = 0.0,
    ) -> None:
        self.total_steps = total_steps  # in state_dict: the length it was built for

        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            t = _progress(step, total_steps, warmup_steps)
            return min_factor + (1 - min_factor) * self.decay(t)

        super().__init__(optimizer, factor)

    @staticmethod
    def decay(t: float) -> float:
        raise NotImplementedError


class WarmupCosineLR(_WarmupLR):
    """Linear warmup, then cosine decay to ``min_factor`` of the learning rate."""

    @staticmethod
    def decay(t: float) -> float:
        return 0.5 * (1 + math.cos(math.pi * t))


class WarmupLinearLR(_WarmupLR):
    """Linear warmup, then linear decay to ``min_factor`` of the learning rate."""

    @staticmethod
    def decay(t: float) -> float:
        return 1 - t
