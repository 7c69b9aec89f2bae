"""Network in Network (Lin, Chen, Yan, "Network In Network", ICLR 2014), CIFAR-10 model.

Each mlpconv block is a spatial convolution followed by two 1x1 convolutions: a small
MLP slid over every position. Three blocks, 3x3/2 max-pooling and dropout 0.5 between
them, and no fully connected layers: the last 1x1 convolution has one map per class and
global average pooling turns each map into that class's score. Widths follow the
authors' released Caffe model (192-160-96, 192-192-192, 192-192-classes). Pooling uses
``ceil_mode=True`` as Caffe does, so 32 -> 16 -> 8.
"""

from __future__ import annotations

from torch import Tensor, nn

from cnn_bench.layers import AdaptiveAvgPool2d, ConvNormAct
from cnn_bench.models.registry import register_model


def mlpconv(in_chs: int, widths: tuple[int, int, int], kernel_size: int) -> nn.Sequential:
    c1, c2, c3 = widths
    return nn.Sequential(
        ConvNormAct(in_chs, c1, kernel_size, norm=False),
        ConvNormAct(c1, c2, 1, norm=False),
        ConvNormAct(c2, c3, 1, norm=False),
    )


class NIN(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.block1 = mlpconv(in_chans, (192, 160, 96), kernel_size=5)
        self.pool1 = nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True), nn.Dropout(dropout))
        self.block2 = mlpconv(96, (192, 192, 192), kernel_size=5)
        self.pool2 = nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True), nn.Dropout(dropout))
        # The last 1x1 layer keeps its ReLU, as in the released model: class maps are >= 0.
        self.block3 = mlpconv(192, (192, 192, num_classes), kernel_size=3)
        self.gap = nn.Sequential(AdaptiveAvgPool2d(1), nn.Flatten())
        self._init_weights()

    def _init_weights(self) -> None:
        # Caffe's model uses Gaussian std 0.05 (0.01 for deep layers); He init trains
        # reliably without the paper's hand-tuned learning rates.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        return self.gap(self.block3(x))


@register_model
def nin(**kwargs) -> NIN:
    return NIN(**kwargs)
