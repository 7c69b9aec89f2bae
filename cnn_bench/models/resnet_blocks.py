"""The residual blocks of ``cnn_bench.models.resnet``: basic and bottleneck, post- and
pre-activation, with the options that make ResNeXt, SE-ResNet, v1 and plain networks."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from cnn_bench.layers import SqueezeExcite


def conv3x3(in_chs: int, out_chs: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 3, stride, padding=1, groups=groups, bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)


@dataclass(frozen=True)
class BlockOptions:
    """The keyword settings that turn a ResNet block into its variants."""

    groups: int = 1  # ResNeXt cardinality
    width_per_group: int = 64  # ResNeXt bottleneck width d; 64 with groups=1 is ResNet
    stride_in_1x1: bool = False  # True: v1 as published; False: v1.5
    se_reduction: int | None = None  # SE ratio r; None: no SE gate
    skip: bool = True  # False: a plain network, no shortcut (He et al.'s "plain" baselines)

    def width(self, planes: int) -> int:
        """Channels of a bottleneck's 3x3 convolution."""
        return int(planes * self.width_per_group / 64) * self.groups

    def strides(self, stride: int) -> tuple[int, int]:
        """Strides of a bottleneck's first 1x1 and its 3x3 convolution."""
        return (stride, 1) if self.stride_in_1x1 else (1, stride)

    def se(self, channels: int) -> nn.Module:
        return SqueezeExcite(channels, self.se_reduction) if self.se_reduction else nn.Identity()

    def require_plain(self, block: str) -> None:
        if self.groups != 1 or self.width_per_group != 64:
            raise ValueError(f"{block} has no grouped convolution: use a bottleneck for ResNeXt")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1
    preact = False

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        opts: BlockOptions = BlockOptions(),
    ) -> None:
        super().__init__()
        opts.require_plain("BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = opts.se(planes)
        self.skip = opts.skip
        self.downsample = downsample or nn.Identity()

    def residual_tail(self) -> nn.Module:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + self.downsample(x) if self.skip else out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand by 4 (ResNet-50 and deeper)."""

    expansion = 4
    preact = False

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        opts: BlockOptions = BlockOptions(),
    ) -> None:
        super().__init__()
        width = opts.width(planes)
        stride1x1, stride3x3 = opts.strides(stride)
        self.conv1 = conv1x1(inplanes, width, stride1x1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride3x3, opts.groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.se = opts.se(planes * self.expansion)
        self.skip = opts.skip
        self.downsample = downsample or nn.Identity()

    def residual_tail(self) -> nn.Module:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + self.downsample(x) if self.skip else out)


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; nothing after the addition (ResNetV2-18/34)."""

    expansion = 1
    preact = True

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        opts: BlockOptions = BlockOptions(),
    ) -> None:
        super().__init__()
        opts.require_plain("PreActBasicBlock")
        self.norm1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.norm2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.se = opts.se(planes)
        self.skip = opts.skip
        self.downsample = downsample

    def residual_tail(self) -> nn.Module:
        # No norm ends a pre-activation branch: zero its last convolution instead (as timm).
        return self.conv2

    def forward(self, x: Tensor) -> Tensor:
        x_preact = self.relu(self.norm1(x))
        # A projection shortcut sees the pre-activated input; an identity one sees x itself.
        shortcut = x if self.downsample is None else self.downsample(x_preact)
        out = self.conv1(x_preact)
        out = self.se(self.conv2(self.relu(self.norm2(out))))
        return out + shortcut if self.skip else out


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1; nothing after the addition."""

    expansion = 4
    preact = True

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        opts: BlockOptions = BlockOptions(),
    ) -> None:
        super().__init__()
        width = opts.width(planes)
        stride1x1, stride3x3 = opts.strides(stride)
        self.norm1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(inplanes, width, stride1x1)
        self.norm2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride3x3, opts.groups)
        self.norm3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.se = opts.se(planes * self.expansion)
        self.skip = opts.skip
        self.downsample = downsample

    def residual_tail(self) -> nn.Module:
        return self.conv3

    def forward(self, x: Tensor) -> Tensor:
        x_preact = self.relu(self.norm1(x))
        shortcut = x if self.downsample is None else self.downsample(x_preact)
        out = self.conv1(x_preact)
        out = self.conv2(self.relu(self.norm2(out)))
        out = self.se(self.conv3(self.relu(self.norm3(out))))
        return out + shortcut if self.skip else out


Block = type[BasicBlock] | type[Bottleneck] | type[PreActBasicBlock] | type[PreActBottleneck]
