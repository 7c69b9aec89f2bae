"""Our networks against torchvision's and timm's, built at test time.

Parameter counts must be equal, and where layer names match torchvision's, its state
dict must load unchanged and give the same outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
import torchvision
from torch import nn

from cnn_bench.models import create_model

tv = torchvision.models

# (our name, our kwargs, reference constructor, REFERENCE.md's figure as a cross-check)
REFERENCES: list[tuple[str, dict, Callable[[], nn.Module], int]] = [
    ("alexnet", {}, tv.alexnet, 61_100_840),
    ("vgg11", {}, tv.vgg11, 132_863_336),
    ("vgg13", {}, tv.vgg13, 133_047_848),
    ("vgg16", {}, tv.vgg16, 138_357_544),
    ("vgg19", {}, tv.vgg19, 143_667_240),
    ("vgg11_bn", {}, tv.vgg11_bn, 132_868_840),
    ("vgg13_bn", {}, tv.vgg13_bn, 133_053_736),
    ("vgg16_bn", {}, tv.vgg16_bn, 138_365_992),
    ("vgg19_bn", {}, tv.vgg19_bn, 143_678_248),
    (
        "googlenet",
        {"aux_logits": False},
        lambda: tv.googlenet(aux_logits=False, init_weights=True),
        6_624_904,
    ),
    (
        "googlenet",
        {"aux_logits": True},
        lambda: tv.googlenet(aux_logits=True, init_weights=True),
        13_004_888,
    ),
    ("resnet18", {}, tv.resnet18, 11_689_512),
    ("resnet34", {}, tv.resnet34, 21_797_672),
    ("resnet50", {}, tv.resnet50, 25_557_032),
    ("resnet101", {}, tv.resnet101, 44_549_160),
    ("resnet152", {}, tv.resnet152, 60_192_808),
    ("resnext50_32x4d", {}, tv.resnext50_32x4d, 25_028_904),
    ("resnext101_32x8d", {}, tv.resnext101_32x8d, 88_791_336),
    ("seresnet18", {}, lambda: timm.create_model("seresnet18"), 11_779_624),
    ("seresnet50", {}, lambda: timm.create_model("seresnet50"), 28_088_024),
    ("seresnext50_32x4d", {}, lambda: timm.create_model("seresnext50_32x4d"), 27_559_896),
    ("resnetv2_50", {}, lambda: timm.create_model("resnetv2_50"), 25_549_352),
    ("resnetv2_18", {}, lambda: timm.create_model("resnetv2_18"), 11_687_720),
]


def n_params(model: nn.Module, kind: type[nn.Module] = nn.Module) -> int:
    return sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, kind)
        for p in m.parameters(recurse=False)
    )


@pytest.mark.parametrize(
    ("name", "kwargs", "reference", "published"),
    REFERENCES,
    ids=[
        f"{r[0]}{'-' + '-'.join(f'{k}={v}' for k, v in r[1].items()) if r[1] else ''}"
        for r in REFERENCES
    ],
)
def test_param_count_equals_reference(
    name: str, kwargs: dict, reference: Callable[[], nn.Module], published: int
) -> None:
    # The meta device allocates nothing and skips the random draws: counting is instant.
    with torch.device("meta"):
        ours = create_model(name, 1000, **kwargs)
        theirs = reference()
    assert n_params(ours) == n_params(theirs)
    assert n_params(ours) == published


@pytest.mark.parametrize(
    ("name", "conv", "linear"),
    [("alexnet", 2_469_696, 58_631_144), ("vgg19", 20_024_384, 123_642_856)],
)
def test_conv_linear_split_as_lecture_notes(name: str, conv: int, linear: int) -> None:
    with torch.device("meta"):
        model = create_model(name, 1000)
    assert n_params(model, nn.Conv2d) == conv
    assert n_params(model, nn.Linear) == linear


@pytest.mark.parametrize(
    ("name", "kwargs", "reference"),
    [
        ("resnet50", {}, tv.resnet50),
        ("vgg16", {}, tv.vgg16),
        ("alexnet", {}, tv.alexnet),
        ("googlenet", {"aux_logits": True}, lambda: tv.googlenet(init_weights=True)),
        ("resnext50_32x4d", {}, tv.resnext50_32x4d),
    ],
)
def test_torchvision_state_dict_gives_same_outputs(
    name: str, kwargs: dict, reference: Callable[[], nn.Module]
) -> None:
    torch.manual_seed(0)
    theirs = reference().eval()
    # Random BN statistics, so a BN wired to the wrong channels would show.
    for m in theirs.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    ours = create_model(name, 1000, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same names, no mapping
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        expected, actual = theirs(x), ours(x)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    assert expected.abs().max() > 1e-3  # the comparison is not between two zeros
