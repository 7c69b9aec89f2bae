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


def layer_table(model: nn.Module, x: Tensor) -> list[dict]:
    """One row per layer of ``model(x)``, in the order they run: ``name``, ``type``,
    ``shape`` (of its output, batch included), ``params`` (its own) and ``macs``.

    The layers are the modules without children (and any module with parameters of its
    own); a layer called twice is listed once, with its last output. Works on the meta
    device, so even a large network costs no memory.
    """
    rows: dict[str, dict] = {}
    hooks = []

    def record(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            shape = tuple(out.shape) if isinstance(out, Tensor) else ()
            rows.setdefault(name, {"name": name, "type": type(module).__name__})
            rows[name]["shape"] = shape

        return hook

    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if name and (not any(module.children()) or own):
            hooks.append(module.register_forward_hook(record(name)))
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    flops = counter.get_flop_counts()
    prefix = type(model).__name__
    modules = dict(model.named_modules())
    for name, row in rows.items():
        row["params"] = sum(p.numel() for p in modules[name].parameters(recurse=False))
        # Counted by module path; a parent's count includes its children's, so only a
        # leaf's count is its own.
        counted = flops.get(f"{prefix}.{name}", {}) if not any(modules[name].children()) else {}
        row["macs"] = sum(counted.values()) // 2
    return list(rows.values())
