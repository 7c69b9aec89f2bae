"""ResNet and its keyword variants: ResNeXt, SE-ResNet, pre-activation ResNetV2.

- ResNet v1: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition",
  CVPR 2016. A downsampling bottleneck puts its stride on the first 1x1 convolution
  (``stride_in_1x1=True``, the ``_v1`` names).
- ResNet v1.5: the stride moves to the 3x3 convolution, so no activation is skipped by
  a strided 1x1 (Goyal et al., "Accurate, Large Minibatch SGD", 2017, and NVIDIA's
  "ResNet v1.5"). The default, and torchvision's.
- ResNetV2: He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV
  2016. Blocks are BN-ReLU-conv (pre-activation), the shortcut is a clean identity
  (projections take the pre-activated input and have no BN), the stem is a bare
  convolution, and a final BN-ReLU precedes pooling. Layout and names as timm's
  ``resnetv2_*`` (which also strides the 3x3).
- ResNeXt: Xie et al., "Aggregated Residual Transformations for Deep Neural Networks",
  CVPR 2017: the bottleneck's 3x3 becomes a grouped convolution of ``groups``
  (cardinality) x ``width_per_group`` channels.
- SE-ResNet: Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018: a
  squeeze-and-excitation gate rescales the residual branch before the addition
  (``se_reduction``, the paper's r = 16).

``width`` is the stem's channel count, doubled at each stage (64, the papers'; 16 gives
narrow networks for short CPU runs). ``resnet8`` ... ``resnet110`` are He et al.'s CIFAR
ResNets (Section 4.2): three stages of ``n`` basic blocks on 16, 32 and 64 channels,
``6n + 2`` layers, with projection shortcuts (the paper's option B) where the shape
changes, not the paper's zero-padded identity (option A).

``skip=False`` removes every shortcut (and so the projections): the "plain" networks He
et al. compare against, whose deeper versions train worse.

``variant="cifar"`` replaces the 7x7/2 stem and its max-pool by a 3x3/1 convolution,
as kuangliu/pytorch-cifar, so 32x32 maps enter the first stage. Layer names are
torchvision's (``conv1``, ``bn1``, ``layer1``..., ``fc``) and timm's in the SE gate,
so torchvision's state dicts load unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnn_bench.layers import AdaptiveAvgPool2d
from cnn_bench.models.registry import (
    IMAGENET_AND_CIFAR,
    ModelArgumentError,
    Variant,
    register_model,
)

# The blocks live beside, re-exported here where they have always been imported from.
from cnn_bench.models.resnet_blocks import (
    BasicBlock,
    Block,
    BlockOptions,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    conv1x1,
    conv3x3,
)

# Every network of this family has a CIFAR and an ImageNet version (register_model).
VARIANTS = IMAGENET_AND_CIFAR


class ResNet(nn.Module):
    def __init__(
        self,
        block: Block,
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        variant: Variant = "imagenet",
        groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        se_reduction: int | None = None,
        skip: bool = True,
        zero_init_residual: bool = False,
        dropout: float = 0.0,
        width: int = 64,
    ) -> None:
        super().__init__()
        if width < 1:
            # A bad --model.arch_kwargs value: one line, as an unknown keyword is.
            raise ModelArgumentError(f"width must be a positive number of channels, not {width}")
        opts = BlockOptions(groups, width_per_group, stride_in_1x1, se_reduction, skip)
        self.inplanes = width
        if variant == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(in_chans, width)
            self.maxpool = nn.Identity()
        # A pre-activation stem is the bare convolution: the first block normalises it.
        self.bn1: nn.Module = nn.Identity() if block.preact else nn.BatchNorm2d(width)
        self.relu: nn.Module = nn.Identity() if block.preact else nn.ReLU(inplace=True)
        # The stem's channels, doubled at each stage (64 for the papers' ImageNet networks).
        planes = (width, 2 * width, 4 * width, 8 * width)
        self.layer1 = self._make_layer(block, planes[0], layers[0], 1, opts)
        self.layer2 = self._make_layer(block, planes[1], layers[1], 2, opts)
        self.layer3 = self._make_layer(block, planes[2], layers[2], 2, opts)
        # CIFAR ResNeXt-29 has three stages; a missing fourth is the identity.
        self.layer4: nn.Module = (
            self._make_layer(block, planes[3], layers[3], 2, opts)
            if len(layers) == 4
            else nn.Identity()
        )
        self.num_features = planes[len(layers) - 1] * block.expansion
        # ResNetV2's last addition is not normalised by any block: BN-ReLU before pooling.
        self.final_norm: nn.Module = (
            nn.Sequential(nn.BatchNorm2d(self.num_features), nn.ReLU(inplace=True))
            if block.preact
            else nn.Identity()
        )
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)  # the paper has none; an option for the head
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights(zero_init_residual)

    def _make_layer(
        self, block: Block, planes: int, blocks: int, stride: int, opts: BlockOptions
    ) -> nn.Sequential:
        downsample = None
        # A plain network (skip=False) has no shortcut, so no projection either: the
        # block's own strided convolution downsamples.
        if opts.skip and (stride != 1 or self.inplanes != planes * block.expansion):
            proj = conv1x1(self.inplanes, planes * block.expansion, stride)
            # v2 projections take the pre-activated input and add no BN of their own.
            downsample = (
                proj
                if block.preact
                else nn.Sequential(proj, nn.BatchNorm2d(planes * block.expansion))
            )
        layers = [block(self.inplanes, planes, stride, downsample, opts=opts)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, opts=opts) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's: He init (fan_out) for convolutions, BN as the identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each residual branch then starts as zero and every block as the identity
            # (Goyal et al. 2017), which helps large-batch training.
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck)):
                    nn.init.zeros_(m.residual_tail().weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(self.final_norm(x)), 1)
        return self.fc(self.dropout(x))


# ResNet v1.5 (torchvision's): stride on the 3x3 convolution.
@register_model
def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model
def resnet101(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model
def resnet152(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 8, 36, 3], **kwargs)


# He et al.'s CIFAR ResNets: 6n + 2 layers, three stages of n basic blocks, width 16.
def _cifar_resnet(n: int, width: int = 16, **kwargs) -> ResNet:
    return ResNet(BasicBlock, [n, n, n], width=width, variant="cifar", **kwargs)


@register_model(variants=("cifar",))
def resnet8(**kwargs) -> ResNet:
    return _cifar_resnet(1, **kwargs)


@register_model(variants=("cifar",))
def resnet14(**kwargs) -> ResNet:
    return _cifar_resnet(2, **kwargs)


@register_model(variants=("cifar",))
def resnet20(**kwargs) -> ResNet:
    return _cifar_resnet(3, **kwargs)


@register_model(variants=("cifar",))
def resnet32(**kwargs) -> ResNet:
    return _cifar_resnet(5, **kwargs)


@register_model(variants=("cifar",))
def resnet56(**kwargs) -> ResNet:
    return _cifar_resnet(9, **kwargs)


@register_model(variants=("cifar",))
def resnet110(**kwargs) -> ResNet:
    return _cifar_resnet(18, **kwargs)


# ResNet v1 as published: stride on the first 1x1 of a downsampling bottleneck.
@register_model
def resnet50_v1(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], stride_in_1x1=True, **kwargs)


@register_model
def resnet101_v1(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], stride_in_1x1=True, **kwargs)


# ResNetV2, pre-activation (timm's names).
@register_model
def resnetv2_18(**kwargs) -> ResNet:
    return ResNet(PreActBasicBlock, [2, 2, 2, 2], **kwargs)


@register_model
def resnetv2_34(**kwargs) -> ResNet:
    return ResNet(PreActBasicBlock, [3, 4, 6, 3], **kwargs)


@register_model
def resnetv2_50(**kwargs) -> ResNet:
    return ResNet(PreActBottleneck, [3, 4, 6, 3], **kwargs)


@register_model
def resnetv2_101(**kwargs) -> ResNet:
    return ResNet(PreActBottleneck, [3, 4, 23, 3], **kwargs)


@register_model
def resnetv2_152(**kwargs) -> ResNet:
    return ResNet(PreActBottleneck, [3, 8, 36, 3], **kwargs)


# ResNeXt: cardinality x bottleneck width in the name.
@register_model
def resnext50_32x4d(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4, **kwargs)


@register_model
def resnext101_32x8d(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=8, **kwargs)


@register_model
def resnext101_64x4d(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], groups=64, width_per_group=4, **kwargs)


@register_model(variants=("cifar",))
def resnext29_32x4d(**kwargs) -> ResNet:
    """kuangliu's ResNeXt29 (32x4d): three stages of three bottlenecks on CIFAR-10, with
    a 3x3 stem as the paper's CIFAR networks (kuangliu uses a 1x1)."""
    return ResNet(Bottleneck, [3, 3, 3], groups=32, width_per_group=4, variant="cifar", **kwargs)


# SE-ResNet / SE-ResNeXt: the paper's reduction r = 16.
@register_model
def seresnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], se_reduction=16, **kwargs)


@register_model
def seresnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], se_reduction=16, **kwargs)


@register_model
def seresnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], se_reduction=16, **kwargs)


@register_model
def seresnet101(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], se_reduction=16, **kwargs)


@register_model
def seresnet152(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 8, 36, 3], se_reduction=16, **kwargs)


@register_model
def seresnext50_32x4d(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4, se_reduction=16, **kwargs)
