"""Activation statistics at initialisation: how each layer's output spreads.

The initialisation study asks whether a scheme keeps the signal's scale through depth
(He et al. 2015 for ReLU, Glorot and Bengio 2010 for tanh): push one batch through the
network and read each conv and linear layer's output mean and standard deviation.

    from cnn_bench.models import create_model, init_weights
    from cnn_bench.models.activations import activation_stats
    model = create_model("vgg16", 10, image_size=32)
    init_weights(model, "kaiming_normal_fan_in")
    for row in activation_stats(model, torch.randn(256, 3, 32, 32)):
        print(row["name"], row["std"])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def activation_stats(
    model: nn.Module, x: Tensor, layers: tuple[type[nn.Module], ...] = LAYERS
) -> list[dict]:
    """One row per ``layers`` module, in the order they run: ``name``, ``type``,
    ``depth`` (1 for the first), ``mean`` and ``std`` of its output over the whole batch
    (the population standard deviation, in float64). The model runs in eval mode under
    ``no_grad`` and is left in the mode it was in."""
    rows: list[dict] = []
    hooks = []

    def record(name: str):
        def hook(module: nn.Module, args: object, output: Tensor) -> None:
            out = output.detach().double()
            rows.append(
                {
                    "name": name,
                    "type": type(module).__name__,
                    "depth": len(rows) + 1,
                    "mean": out.mean().item(),
                    "std": out.std(correction=0).item(),
                }
            )

        return hook

    for name, module in model.named_modules():
        if isinstance(module, layers):
            hooks.append(module.register_forward_hook(record(name)))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows
