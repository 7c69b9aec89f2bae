"""Learning-rate schedules that need the run's length, as ``LambdaLR`` subclasses.

``ImageClassifier`` fills ``total_steps`` when it is left out (optimizer steps, or epochs when the
schedule steps per epoch) from the trainer, so a YAML file never repeats it.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _progress(step: int, total_steps: int | None, warmup_steps: int) -> float:
    """Fraction of the post-warmup steps done, in [0, 1]."""
    if total_steps is None:
        raise ValueError("total_steps is unknown: give it, or let ImageClassifier fill it")
    return min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))


class WarmupCosineLR(LambdaLR):
    """Linear warmup from 0 over ``warmup_steps``, then cosine decay to ``min_factor``."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_steps: int = 0,
        min_factor: float = 0.0,
    ) -> None:
        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            t = _progress(step, total_steps, warmup_steps)
            return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))

        super().__init__(optimizer, factor)


class WarmupLinearLR(LambdaLR):
    """Linear warmup from 0 over ``warmup_steps``, then linear decay to ``min_factor``."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_steps: int = 0,
        min_factor: float = 0.0,
    ) -> None:
        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            return 1 - (1 - min_factor) * _progress(step, total_steps, warmup_steps)

        super().__init__(optimizer, factor)
