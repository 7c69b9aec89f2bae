"""GoogLeNet / Inception v1 (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015).

Nine inception modules: parallel 1x1, 3x3 and "5x5" convolutions and a pooled
projection, concatenated, with 1x1 reductions in front of the expensive branches.
Max-pooling is 3x3/2 with ``ceil_mode=True`` (Caffe rounding), so 224 gives 7x7 at
the end. The layout, names and widths are torchvision's, so its state dicts load; like
torchvision (and its weights) the "5x5" branch uses a 3x3 kernel
(pytorch/vision#906), which is what gives 6,624,904 parameters.

Auxiliary classifiers (``aux_logits=True``) sit on inception 4a and 4d. In training
mode the forward then returns ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)``;
the paper's loss is ``ce(logits) + AUX_LOSS_WEIGHT * (ce(aux1) + ce(aux2))`` with
``AUX_LOSS_WEIGHT = 0.3``. In eval mode the forward returns the logits alone, and
``split_aux`` turns either kind of output into ``(logits, [aux, ...])``.

``variant="cifar"`` is kuangliu/pytorch-cifar's: a 3x3 stem of 192 channels and no
pooling before inception 3a, so 32x32 maps reach 3a and 8x8 reach 5b.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnn_bench.layers import AdaptiveAvgPool2d, ConvNormAct, adaptive_avg_pool2d
from cnn_bench.models.registry import IMAGENET_AND_CIFAR, Variant, register_model

# Every network of this family has a CIFAR and an ImageNet version (register_model).
VARIANTS = IMAGENET_AND_CIFAR

AUX_LOSS_WEIGHT = 0.3  # the paper's weight of each auxiliary loss (Section 5)


class GoogLeNetOutputs(NamedTuple):
    logits: Tensor
    aux_logits2: Tensor
    aux_logits1: Tensor


def split_aux(output: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, list[Tensor]]:
    """``(main logits, [auxiliary logits])`` for the output of any model in the zoo."""
    if isinstance(output, Tensor):
        return output, []
    main, *aux = output
    return main, [a for a in aux if a is not None]


def _conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> ConvNormAct:
    # torchvision's BasicConv2d: batch norm with eps 1e-3, as TensorFlow's Inception.
    return ConvNormAct(in_chs, out_chs, kernel_size, stride, bn_eps=1e-3)


class Inception(nn.Module):
    def __init__(
        self,
        in_chs: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.branch1 = _conv(in_chs, ch1x1, 1)
        self.branch2 = nn.Sequential(_conv(in_chs, ch3x3red, 1), _conv(ch3x3red, ch3x3, 3))
        self.branch3 = nn.Sequential(_conv(in_chs, ch5x5red, 1), _conv(ch5x5red, ch5x5, 3))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), _conv(in_chs, pool_proj, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """5x5/3 average pool (here adaptive to 4x4), 1x1 conv of 128, FC 1024, dropout 0.7."""

    def __init__(self, in_chs: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = _conv(in_chs, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.conv(adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class GoogLeNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        variant: Variant = "imagenet",
        aux_logits: bool = True,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
    ) -> None:
        super().__init__()
        if variant == "imagenet":
            self.conv1 = _conv(in_chans, 64, 7, stride=2)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.conv2 = _conv(64, 64, 1)
            self.conv3 = _conv(64, 192, 3)
            self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        else:
            # CIFAR images are already as small as ImageNet's after the stem: skip its pools.
            self.conv1 = _conv(in_chans, 192, 3)
            self.maxpool1, self.conv2, self.conv3, self.maxpool2 = (nn.Identity() for _ in range(4))
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes, dropout_aux) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes, dropout_aux) if aux_logits else None
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)  # the paper's 40% on ImageNet; torchvision's 0.2
        self.fc = nn.Linear(1024, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's: truncated normal std 0.01 for every conv and linear weight.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor | GoogLeNetOutputs:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if aux1 is not None and aux2 is not None:
            return GoogLeNetOutputs(logits, aux2, aux1)
        return logits


@register_model
def googlenet(variant: Variant = "imagenet", aux_logits: bool | None = None, **kwargs) -> GoogLeNet:
    """Auxiliary classifiers default on for ImageNet (paper, torchvision), off for CIFAR
    (kuangliu trains without them)."""
    aux = variant == "imagenet" if aux_logits is None else aux_logits
    return GoogLeNet(variant=variant, aux_logits=aux, **kwargs)
