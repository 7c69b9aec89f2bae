"""Each init scheme draws the variance it promises, and that variance does its job."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from cnn_bench.models import INIT_SCHEMES, create_model, init_weights
from cnn_bench.models.init import init_std

FORMULAS = {
    # scheme: std as a function of (fan_in, fan_out), written out independently of init.py
    "lecun_normal": lambda fi, fo: math.sqrt(1 / fi),
    "xavier_normal": lambda fi, fo: math.sqrt(2 / (fi + fo)),
    "xavier_uniform": lambda fi, fo: math.sqrt(2 / (fi + fo)),
    "kaiming_normal_fan_in": lambda fi, fo: math.sqrt(2 / fi),
    "kaiming_uniform_fan_in": lambda fi, fo: math.sqrt(2 / fi),
    "kaiming_normal_fan_out": lambda fi, fo: math.sqrt(2 / fo),
    "kaiming_uniform_fan_out": lambda fi, fo: math.sqrt(2 / fo),
}


def test_every_scheme_has_a_formula() -> None:
    assert set(INIT_SCHEMES) == {"default", "pytorch", *FORMULAS}


def test_pytorch_is_torchs_own_default_not_the_familys() -> None:
    # VGG draws He fan_out weights and zero biases; "pytorch" gives back what nn.Conv2d
    # and nn.Linear draw: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and biases.
    model = create_model("vgg11", 10, image_size=32)
    torch.manual_seed(3)
    init_weights(model, "pytorch")
    torch.manual_seed(3)
    built = [nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 128, 3, padding=1)]
    first, second = model.features[0], model.features[3]
    assert torch.equal(first.weight, built[0].weight) and torch.equal(first.bias, built[0].bias)
    assert torch.equal(second.weight, built[1].weight)
    fan_in = 64 * 9
    assert second.weight.abs().max().item() <= 1 / math.sqrt(fan_in)
    assert second.weight.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.03)
    assert torch.count_nonzero(second.bias) == 128


@pytest.mark.parametrize("scheme", list(FORMULAS))
def test_weight_std_matches_formula(scheme: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 128, 3), nn.Linear(300, 100))
    init_weights(model, scheme)
    conv, linear = model
    for layer, fan_in, fan_out in ((conv, 64 * 9, 128 * 9), (linear, 300, 100)):
        expected = FORMULAS[scheme](fan_in, fan_out)
        assert init_std(scheme, fan_in, fan_out) == pytest.approx(expected)
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.03)
        assert layer.weight.mean().abs().item() < 0.05 * expected
        assert torch.count_nonzero(layer.bias) == 0
    # Uniform draws are bounded by sqrt(3) * std, normal ones are not.
    bound = math.sqrt(3) * FORMULAS[scheme](64 * 9, 128 * 9)
    exceeds = conv.weight.abs().max().item() > bound
    assert exceeds == ("uniform" not in scheme)


def test_default_leaves_weights_alone() -> None:
    model = create_model("resnet18", 10, variant="cifar")
    before = [p.clone() for p in model.parameters()]
    init_weights(model, "default")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_unknown_scheme_lists_choices() -> None:
    with pytest.raises(ValueError, match="kaiming_normal_fan_in"):
        init_weights(nn.Linear(2, 2), "he")


def _preactivation_variances(model: nn.Module, x: Tensor) -> list[float]:
    """Second moment of the input to each linear layer's activation, layer by layer."""
    moments = []
    with torch.no_grad():
        for layer in model.layers:
            x = layer(x)
            if isinstance(layer, nn.Linear):
                moments.append(x.square().mean().item())
    return moments


def _deep_mlp(activation: str, scheme: str | None, std: float | None = None) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(
        "mlp", 256, in_chans=1, image_size=16, depth=12, width=256, activation=activation
    )
    if scheme:
        init_weights(model, scheme)
    else:
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, std)
                nn.init.zeros_(m.bias)
    return model


def test_kaiming_keeps_second_moment_through_relus() -> None:
    x = torch.randn(512, 1, 16, 16)
    he = _preactivation_variances(_deep_mlp("relu", "kaiming_normal_fan_in"), x)
    # Twelve ReLU layers: He init keeps E[y^2] within a factor 2 of the first layer's...
    assert all(0.5 < m / he[0] < 2 for m in he), he
    # ...while Xavier's variance (half as large for equal fans) halves it at each layer.
    xavier = _preactivation_variances(_deep_mlp("relu", "xavier_normal"), x)
    assert xavier[-1] / xavier[0] < 2.0**-8, xavier


def test_lecun_keeps_tanh_activations_in_range() -> None:
    x = torch.randn(512, 1, 16, 16)
    lecun = _preactivation_variances(_deep_mlp("tanh", "lecun_normal"), x)
    # Unit input variance stays of order one: tanh's contraction shrinks it slowly
    # (about 1 / (2 * depth) asymptotically), it neither vanishes nor saturates.
    assert 0.9 < lecun[0] < 1.1
    assert all(0.03 < m < 1.1 for m in lecun), lecun
    too_small = _preactivation_variances(_deep_mlp("tanh", None, std=0.3 / 16), x)
    assert too_small[-1] < 1e-12, too_small  # vanishes geometrically: 0.09 per layer
    too_large = _preactivation_variances(_deep_mlp("tanh", None, std=1.0), x)
    assert all(m > 50 for m in too_large[1:]), too_large  # saturated: tanh outputs are +-1
