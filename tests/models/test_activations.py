"""Activation statistics: each layer's output mean and std, as computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnn_bench.models import create_model, init_weights
from cnn_bench.models.activations import activation_stats


def test_stats_are_each_layers_own_output() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).train()
    x = torch.randn(64, 8)
    rows = activation_stats(model, x)
    h = model[0](x)
    y = model[2](torch.relu(h))
    assert [r["name"] for r in rows] == ["0", "2"] and [r["depth"] for r in rows] == [1, 2]
    assert rows[0]["mean"] == pytest.approx(h.mean().item(), rel=1e-5)
    assert rows[0]["std"] == pytest.approx(h.std(correction=0).item(), rel=1e-5)
    assert rows[1]["std"] == pytest.approx(y.std(correction=0).item(), rel=1e-5)
    assert model.training  # left as it was


def test_he_keeps_the_scale_through_relu_layers_and_xavier_shrinks_it() -> None:
    """The notes' claim, on a deep plain ReLU stack (no batch norm): with He's fan-in
    scheme the std stays within a factor 2 over 20 layers; with Xavier's it halves
    about every two layers (variance x 1/2 per layer, so std x 2**-0.5)."""
    torch.manual_seed(0)
    width, depth = 256, 20
    model = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.ReLU())])
    x = torch.randn(512, width)
    init_weights(model, "kaiming_normal_fan_in")
    he = [r["std"] for r in activation_stats(model, x)]
    init_weights(model, "xavier_normal")
    xavier = [r["std"] for r in activation_stats(model, x)]
    assert 0.5 < he[-1] / he[0] < 2
    assert xavier[-1] / xavier[0] == pytest.approx(math.sqrt(0.5) ** (depth - 1), rel=0.5)


def test_every_conv_and_linear_of_a_registered_network_is_listed() -> None:
    model = create_model("vgg11", 10, image_size=32)
    rows = activation_stats(model, torch.randn(4, 3, 32, 32))
    expected = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert [r["name"] for r in rows] == expected
    assert all(r["std"] > 0 for r in rows)
