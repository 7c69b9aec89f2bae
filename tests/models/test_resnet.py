"""Where the ResNet keyword variants must differ: strides, groups, SE, identity paths."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from cnn_bench.layers import SqueezeExcite
from cnn_bench.models import create_model
from cnn_bench.models.resnet import Bottleneck, PreActBottleneck


def test_v1_strides_first_1x1_and_v15_strides_3x3() -> None:
    with torch.device("meta"):
        v1, v15 = create_model("resnet50_v1"), create_model("resnet50")
    for stage in ("layer2", "layer3", "layer4"):
        b1, b15 = getattr(v1, stage)[0], getattr(v15, stage)[0]
        assert (b1.conv1.stride, b1.conv2.stride) == ((2, 2), (1, 1))
        assert (b15.conv1.stride, b15.conv2.stride) == ((1, 1), (2, 2))
        assert b1.downsample[0].stride == b15.downsample[0].stride == (2, 2)
    # Moving the stride changes no weight shape.
    assert [p.shape for p in v1.parameters()] == [p.shape for p in v15.parameters()]


def test_v1_is_cheaper_than_v15() -> None:
    # A stride on the 1x1 shrinks the map before the 3x3, so v1 costs fewer FLOPs.
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for name in ("resnet50_v1", "resnet50"):
        with torch.device("meta"):
            model, x = create_model(name).eval(), torch.empty(1, 3, 224, 224)
        with FlopCounterMode(display=False) as counter:
            model(x)
        flops[name] = counter.get_total_flops()
    assert flops["resnet50_v1"] < flops["resnet50"]


def test_cifar_stem_keeps_resolution() -> None:
    model = create_model("resnet18", 10, variant="cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model.layer1(model.conv1(torch.randn(1, 3, 32, 32))).shape[-1] == 32


def test_resnext_groups_and_width() -> None:
    with torch.device("meta"):
        model = create_model("resnext50_32x4d")
    block = model.layer1[0]
    assert block.conv2.groups == 32 and block.conv2.in_channels == 32 * 4


def test_resnext29_is_kuangliu_layout() -> None:
    with torch.device("meta"):
        model = create_model("resnext29_32x4d", 10)
    stages = [model.layer1, model.layer2, model.layer3]
    assert [len(s) for s in stages] == [3, 3, 3]
    assert [s[0].conv2.in_channels for s in stages] == [128, 256, 512]
    assert model.fc.in_features == 1024
    assert isinstance(model.layer4, nn.Identity)


def test_se_width_rounds_like_timm() -> None:
    with torch.device("meta"):
        ours = create_model("seresnet18")
        theirs = timm.create_model("seresnet18")
    # 64 / 16 = 4 rounds up to 8, timm's divisor.
    assert ours.layer1[0].se.fc1.out_channels == theirs.layer1[0].se.fc1.out_channels == 8
    assert ours.layer4[0].se.fc1.out_channels == 32


def test_se_gates_scale_each_channel_into_0_1() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(32, reduction=4)
    x = torch.randn(2, 32, 5, 5).abs() + 0.1
    ratio = se(x) / x
    gate = ratio[:, :, 0, 0]
    assert torch.allclose(ratio, gate[:, :, None, None].expand_as(ratio), atol=1e-6)
    assert ((gate > 0) & (gate < 1)).all()


@pytest.mark.parametrize("name", ["resnet50", "seresnet50", "resnet18"])
def test_zero_init_residual_makes_blocks_relu_of_input(name: str) -> None:
    model = create_model(name, 10, variant="cifar", zero_init_residual=True).eval()
    block = model.layer1[1]  # an identity-shortcut block
    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))
    # Without the option the branch is live.
    block = create_model(name, 10, variant="cifar").eval().layer1[1]
    with torch.no_grad():
        assert not torch.allclose(block(x), torch.relu(x))


@pytest.mark.parametrize("name", ["resnetv2_50", "resnetv2_18"])
def test_preact_identity_path_is_clean(name: str) -> None:
    # With the branch zeroed a v2 block is exactly the identity: no ReLU after the add.
    model = create_model(name, 10, variant="cifar", zero_init_residual=True).eval()
    x = torch.randn(2, model.layer1[1].conv1.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.layer1[1](x), x)
    # Projections see the pre-activated input and have no BN of their own.
    first = model.layer2[0]
    assert isinstance(first.downsample, nn.Conv2d)
    assert isinstance(model.bn1, nn.Identity)
    assert isinstance(model.final_norm[0], nn.BatchNorm2d)


def test_bottleneck_classes_used() -> None:
    with torch.device("meta"):
        assert isinstance(create_model("resnetv2_50").layer1[0], PreActBottleneck)
        assert isinstance(create_model("seresnext50_32x4d").layer1[0], Bottleneck)
