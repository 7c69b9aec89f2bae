"""What the training step accumulates on the device without ever reading it back.

``TopKAccuracy`` counts top-k hits; ``EMA`` keeps an exponential moving average of the
weights. Their torch and torchmetrics counterparts give the same numbers, but read a
device value on the host in every update (torchmetrics' one-hot encoding validates the
labels, ``AveragedModel`` compares its step count with zero), and each such read makes
the CPU wait for the GPU to finish the step.
"""

from __future__ import annotations

from itertools import chain

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from torchmetrics import Metric


class TopKAccuracy(Metric):
    """The fraction of samples whose label is among the ``k`` highest scores (micro
    average), summed over processes at ``compute``: MulticlassAccuracy(top_k=k,
    average="micro"), with no host sync in ``update``."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        self.k = k
        self.add_state("correct", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, scores: Tensor, labels: Tensor) -> None:
        top = scores.topk(min(self.k, scores.shape[1]), dim=1).indices
        # In place: an assignment to a state goes through nn.Module.__setattr__, which
        # costs more than the count itself on a CPU.
        self.correct.add_((top == labels[:, None]).any(dim=1).sum())
        self.total.add_(labels.numel())

    def compute(self) -> Tensor:
        return self.correct.double().div(self.total).float()


class EMA(AveragedModel):
    """An exponential moving average of a network's parameters and buffers: after the
    first update (a copy), ``average = decay * average + (1 - decay) * current``, as
    ``AveragedModel(multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)``; integer
    buffers (batch norm's counter) are copied. The state dict is ``AveragedModel``'s.

    It is never trained: its parameters take no gradients (with them DDP waits forever
    for gradients that never come).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1]; got {decay}")
        super().__init__(model, use_buffers=True)
        self.decay = decay
        self.requires_grad_(False)
        # Whether the first update (the copy) has happened: read from n_averaged once,
        # at the first update after construction or loading, never per step.
        self._started: bool | None = None
        self.register_load_state_dict_post_hook(lambda module, _: module._forget_started())

    def _forget_started(self) -> None:
        self._started = None

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._started is None:
            self._started = bool(self.n_averaged > 0)
        averaged = chain(self.module.parameters(), self.module.buffers())
        current = chain(model.parameters(), model.buffers())
        floats: tuple[list[Tensor], list[Tensor]] = ([], [])
        for avg, new in zip(averaged, current, strict=True):
            if self._started and avg.is_floating_point():
                floats[0].append(avg)
                floats[1].append(new.detach())
            else:
                avg.copy_(new)
        if floats[0]:
            torch._foreach_lerp_(floats[0], floats[1], 1.0 - self.decay)
        self._started = True
        self.n_averaged += 1
