"""Multiply-adds of a forward pass, counted with ``torch.utils.flop_counter``."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: nn.Module, x: Tensor) -> int:
    """Multiply-adds of ``model(x)``: half the FLOPs ``torch.utils.flop_counter`` counts."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def model_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on a zero input of ``input_shape`` (batch
    included), counted as ``cnn-bench models`` counts them.

    Runs in eval mode, so batch-norm statistics are left as they were.
    """
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        return count_macs(model.eval(), torch.zeros(input_shape, device=device))
    finally:
        model.train(was_training)
