"""AlexNet (Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks", NeurIPS 2012).

``variant="imagenet"`` is the single-tower network of torchvision (its layer widths
come from Krizhevsky's later "One weird trick" paper, arXiv 1404.5997, which merged
the two GPU towers): five convolutions, overlapping 3x3/2 max-pooling, and a
4096-4096 classifier with dropout 0.5. Local response normalisation after the first
two convolutions is optional (``lrn=True``); it has no parameters, but it shifts the
layer indices, so only ``lrn=False`` loads torchvision state dicts.

``variant="cifar"`` is the smaller network Krizhevsky trained on CIFAR-10 with
cuda-convnet (two 5x5 convolutions of 64 maps, overlapping 3x3/2 max-pooling, then
384-192 fully connected layers), not split across GPUs and without LRN.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnn_bench.layers import AdaptiveAvgPool2d
from cnn_bench.models.registry import IMAGENET_AND_CIFAR, Variant, register_model

# Every network of this family has a CIFAR and an ImageNet version (register_model).
VARIANTS = IMAGENET_AND_CIFAR


def _lrn() -> nn.Module:
    # The paper's constants: k=2, n=5, alpha=1e-4, beta=0.75.
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


class AlexNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
        lrn: bool = False,
    ) -> None:
        super().__init__()
        features: list[nn.Module] = [
            nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            *([_lrn()] if lrn else []),
            nn.MaxPool2d(kernel_size=3, stride=2),  # overlapping pooling: the paper's 3/2
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            *([_lrn()] if lrn else []),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        ]
        self.features = nn.Sequential(*features)
        # 224 pixels give 6x6 maps; the adaptive pool keeps the classifier valid elsewhere.
        self.avgpool = AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNetCifar(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 64, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 32 -> 15
            nn.Conv2d(64, 64, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 15 -> 7
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 384),
            nn.ReLU(inplace=True),
            nn.Linear(384, 192),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(192, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_model
def alexnet(variant: Variant = "imagenet", **kwargs) -> nn.Module:
    return AlexNet(**kwargs) if variant == "imagenet" else AlexNetCifar(**kwargs)
