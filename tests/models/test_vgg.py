"""VGG's width and activation options: the channel counts and the nonlinearity they
promise, and the paper's network unchanged without them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnn_bench.models import create_model
from cnn_bench.models.registry import ModelArgumentError


def _params(cfg: list, classes: int = 10, bn: bool = False) -> int:
    """VGG-CIFAR's parameter count written out: 3x3 convs with biases, one linear."""
    total, c_in = 0, 3
    for v in cfg:
        if v != "M":
            total += c_in * v * 9 + v + (2 * v if bn else 0)
            c_in = v
    return total + c_in * classes + classes


def test_width_scales_every_convolution():
    model = create_model("vgg11_bn", 10, image_size=32, width=0.25)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [16, 32, 64, 64, 128, 128, 128, 128]
    cfg = [16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M"]
    assert sum(p.numel() for p in model.parameters()) == _params(cfg, bn=True)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_tanh_replaces_every_relu_and_the_default_is_the_papers():
    tanh = create_model("vgg19", 10, image_size=32, width=0.125, activation="tanh")
    assert sum(isinstance(m, nn.Tanh) for m in tanh.modules()) == 16
    assert not any(isinstance(m, nn.ReLU) for m in tanh.modules())
    plain = create_model("vgg19", 10, image_size=32)
    assert sum(isinstance(m, nn.ReLU) for m in plain.modules()) == 16
    full = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"] + [512] * 4 + ["M"]
    full += [512] * 4 + ["M"]
    assert sum(p.numel() for p in plain.parameters()) == _params(full)


def test_a_bad_width_or_activation_is_a_model_argument_error():
    with pytest.raises(ModelArgumentError, match="width must be positive, not 0"):
        create_model("vgg11", 10, image_size=32, width=0)
    with pytest.raises(ModelArgumentError, match="one of relu, tanh, not 'gelu'"):
        create_model("vgg11", 10, image_size=32, activation="gelu")
