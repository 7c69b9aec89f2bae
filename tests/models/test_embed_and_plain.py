"""A shallower ResNet embedded in a deeper one computes the same function; plain
ResNets (no shortcuts) for the degradation study; narrow ResNets and He et al.'s CIFAR
ResNets for short runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cnn_bench.models import create_model
from cnn_bench.models.pretrained import PretrainedError, load_pretrained
from cnn_bench.models.registry import ModelArgumentError


def _randomised(model: nn.Module) -> nn.Module:
    """Weights and batch-norm statistics far from their initial values, so that an
    identity that only holds at initialisation would not pass."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize(
    ("small", "large", "size", "kwargs"),
    [
        ("resnet18", "resnet34", 32, {}),
        ("resnet18", "resnet34", 64, {}),  # the ImageNet variant (7x7 stem, max-pool)
        ("resnetv2_18", "resnetv2_34", 32, {}),
        ("resnet50", "resnet101", 32, {}),  # v1.5 bottlenecks
        ("seresnet18", "seresnet34", 32, {}),
        ("resnet18", "resnet34", 32, {"width": 16}),  # narrow, as the depth_and_skips study
        ("resnet8", "resnet20", 32, {}),  # He et al.'s CIFAR ResNets
    ],
)
def test_embedded_network_equals_the_one_it_came_from(
    tmp_path: Path, small: str, large: str, size: int, kwargs: dict
) -> None:
    image_size = 32 if size == 32 else 224  # the variant; the input below is `size`
    shallow = _randomised(create_model(small, 10, image_size=image_size, **kwargs))
    path = tmp_path / "small.pt"
    torch.save(shallow.state_dict(), path)
    deep = create_model(large, 10, image_size=image_size, **kwargs)
    load_pretrained(deep, f"embed:{path}", num_classes=10)
    deep.eval()
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        expected, got = shallow(x), deep(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
    # the added blocks are real blocks that train from here: not the identity module
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in shallow.parameters())


def test_embedding_refuses_what_does_not_fit(tmp_path: Path) -> None:
    deep = tmp_path / "deep.pt"
    torch.save(create_model("resnet34", 10, image_size=32).state_dict(), deep)
    with pytest.raises(PretrainedError, match="nothing to embed"):
        load_pretrained(create_model("resnet34", 10, image_size=32), f"embed:{deep}", 10)
    with pytest.raises(PretrainedError, match="does not fit this network: unexpected layer"):
        load_pretrained(create_model("resnet18", 10, image_size=32), f"embed:{deep}", 10)
    vgg = tmp_path / "vgg.pt"
    torch.save(create_model("vgg11", 10, image_size=32).state_dict(), vgg)
    with pytest.raises(PretrainedError):
        load_pretrained(create_model("resnet34", 10, image_size=32), f"embed:{vgg}", 10)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnetv2_18", "resnetv2_50"])
def test_a_plain_network_has_no_shortcut(arch: str) -> None:
    residual = create_model(arch, 10, image_size=32)
    plain = create_model(arch, 10, image_size=32, skip=False)
    projections = sum(p.numel() for n, p in residual.named_parameters() if ".downsample." in n)
    assert projections > 0
    assert not [n for n, _ in plain.named_parameters() if ".downsample." in n]
    params = sum(p.numel() for p in plain.parameters())
    assert params == sum(p.numel() for p in residual.parameters()) - projections
    # the same weights, without the additions, compute another function
    plain.load_state_dict(
        {k: v for k, v in residual.state_dict().items() if ".downsample." not in k}
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(x), residual.eval()(x), atol=1e-3)
        # ... and one block of it, by hand: relu(bn2(conv2(relu(bn1(conv1(x))))))
        if arch == "resnet18":
            block, h = plain.layer1[0], torch.randn(2, 64, 8, 8)
            by_hand = torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(h))))))
            assert torch.equal(block(h), by_hand)


@pytest.mark.parametrize(("arch", "n"), [("resnet8", 1), ("resnet14", 2), ("resnet20", 3)])
def test_cifar_resnets_have_6n_plus_2_layers_on_16_32_64_channels(arch: str, n: int) -> None:
    model = create_model(arch, 10, image_size=32)
    weighted = [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and ".downsample." not in name
    ]
    assert len(weighted) == 6 * n + 2
    assert [model.layer1[0].conv1.out_channels, model.layer3[0].conv1.out_channels] == [16, 64]
    assert isinstance(model.layer4, nn.Identity) and model.fc.in_features == 64


def test_resnet20_parameter_count_by_hand() -> None:
    # stem 3*16*9 + BN 32; stage 1: 6 convs 16*16*9 + 6 BN of 32; stage 2: 32*16*9 +
    # 5 * 32*32*9 + 6 BN of 64 + projection 16*32 + BN 64; stage 3: 64*32*9 + 5 * 64*64*9
    # + 6 BN of 128 + projection 32*64 + BN 128; fc 64*10 + 10. He et al. give 0.27M.
    by_hand = 432 + 32 + 13_824 + 192 + 50_688 + 384 + 576 + 202_752 + 768 + 2_176 + 650
    assert sum(p.numel() for p in create_model("resnet20", 10).parameters()) == by_hand == 272_474


def test_width_scales_every_stage() -> None:
    narrow = create_model("resnet18", 10, image_size=32, width=16)
    wide = create_model("resnet18", 10, image_size=32)
    assert [narrow.conv1.out_channels, narrow.fc.in_features] == [16, 128]
    assert [wide.conv1.out_channels, wide.fc.in_features] == [64, 512]
    # convolutions of c_in x c_out channels: 16 times fewer weights, bar the stem's input
    convs = sum(
        p.numel() for n, p in narrow.named_parameters() if p.dim() == 4 and n != "conv1.weight"
    )
    wide_convs = sum(
        p.numel() for n, p in wide.named_parameters() if p.dim() == 4 and n != "conv1.weight"
    )
    assert convs * 16 == wide_convs
    with pytest.raises(ModelArgumentError, match="width must be a positive"):
        create_model("resnet18", 10, image_size=32, width=0)
