"""VGG (Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015).

Stacks of 3x3 convolutions (padding 1) separated by 2x2/2 max-pooling; configurations
A, B, D, E of the paper's Table 1 are VGG11, 13, 16, 19. ``batch_norm=True`` adds batch
norm after every convolution (the ``_bn`` names; not in the paper, which predates it).

``width`` scales every convolution's channels (0.125: 8 to 64 channels, for CPU-sized
studies) and ``activation="tanh"`` replaces the ReLUs, for the initialisation study;
the defaults are the paper's network.

``variant="imagenet"`` ends in the paper's 4096-4096 classifier with dropout 0.5 on a
7x7x512 map and matches torchvision's layer indices, so its state dicts load unchanged.
``variant="cifar"`` keeps the convolutions and pools (32 pixels become 1x1x512 after
five pools) and ends in one linear layer, as kuangliu/pytorch-cifar.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from cnn_bench.layers import AdaptiveAvgPool2d
from cnn_bench.models.mlp import ACTIVATIONS
from cnn_bench.models.registry import (
    IMAGENET_AND_CIFAR,
    ModelArgumentError,
    Variant,
    register_model,
)

# Every network of this family has a CIFAR and an ImageNet version (register_model).
VARIANTS = IMAGENET_AND_CIFAR

# Output channels of each 3x3 convolution, "M" for a 2x2/2 max-pool (paper, Table 1).
CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


def make_layers(
    cfg: list[int | str], in_chans: int, batch_norm: bool, activation: str = "relu"
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_chans, int(v), kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        # In place for ReLU, as torchvision: the pre-activation map is not kept.
        layers.append(nn.ReLU(inplace=True) if activation == "relu" else ACTIVATIONS[activation]())
        in_chans = int(v)
    return nn.Sequential(*layers)


def scaled(cfg: list[int | str], width: float) -> list[int | str]:
    """``cfg`` with every convolution's channels times ``width`` (at least one)."""
    return [v if v == "M" else max(1, round(int(v) * width)) for v in cfg]


class VGG(nn.Module):
    def __init__(
        self,
        cfg: list[int | str],
        num_classes: int = 1000,
        in_chans: int = 3,
        batch_norm: bool = False,
        variant: Variant = "imagenet",
        dropout: float | None = None,
        width: float = 1.0,
        activation: Literal["relu", "tanh"] = "relu",
    ) -> None:
        super().__init__()
        # Bad --model.arch_kwargs values: one line for the user, not a traceback.
        if not width > 0:
            raise ModelArgumentError(f"VGG width must be positive, not {width}")
        if activation not in ACTIVATIONS:
            known = ", ".join(ACTIVATIONS)
            raise ModelArgumentError(f"VGG activation is one of {known}, not {activation!r}")
        cfg = scaled(cfg, width)
        self.features = make_layers(cfg, in_chans, batch_norm, activation)
        width = [v for v in cfg if v != "M"][-1]
        if variant == "imagenet":
            dropout = 0.5 if dropout is None else dropout  # the paper's value
            self.avgpool = AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(int(width) * 7 * 7, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(4096, num_classes),
            )
        else:
            dropout = 0.0 if dropout is None else dropout  # kuangliu's head has none
            self.avgpool = AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(int(width), num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's choice: He init for the ReLU convolutions, small Gaussian linears.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _vgg(cfg: str, batch_norm: bool, variant: Variant, **kwargs) -> VGG:
    return VGG(CFGS[cfg], batch_norm=batch_norm, variant=variant, **kwargs)


@register_model
def vgg11(variant: Variant = "imagenet", **kwargs) -> VGG:
    return _vgg("A", False, variant, **kwargs)


@register_model
def vgg11_bn(variant: Variant = "imagenet", **kwargs) -> VGG:
    return _vgg("A", True, variant, **kwargs)


@register_model
def vgg13(variant: Variant = "imagenet", **kwargs) -> VGG:
    return _vgg("B", False, variant, **kwargs)


@register_model
def vgg13_bn(variant: Variant = "imagenet", **kwargs) -> VGG:
    return _vgg("B", True, variant, **kwargs)


@register_model
def vgg16(variant: Variant = "imagenet", **kwargs) -> VGG:
    return _vgg("D", False, variant, **kwargs)


@register_model
def vgg16_bn(variant: Variant = "imagenet", **kwargs) -> VGG:
    return _vgg("D", True, variant, **kwargs)


@register_model
def vgg19(variant: Variant = "imagenet", **kwargs) -> VGG:
    return _vgg("E", False, variant, **kwargs)


@register_model
def vgg19_bn(variant: Variant = "imagenet", **kwargs) -> VGG:
    return _vgg("E", True, variant, **kwargs)
