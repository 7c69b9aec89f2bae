"""Squeeze-and-excitation (Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018).

Global average pooling squeezes each channel to one number, a two-layer bottleneck
turns those into per-channel gates in (0, 1), and the input is rescaled by them.
"""

from __future__ import annotations

from torch import Tensor, nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` (at least ``divisor``).

    timm rounds SE widths this way, so an SE-ResNet18 stage of 64 channels squeezes to 8,
    not 64 / 16 = 4; matching it keeps our parameter counts equal to timm's.
    """
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """SE gate with ``channels / reduction`` hidden units (rounded as timm does).

    The two fully connected layers are 1x1 convolutions with bias, as in timm's
    ``SEModule``; on a 1x1 map that is the paper's FC layer.
    """

    def __init__(self, channels: int, reduction: int = 16, divisor: int = 8) -> None:
        super().__init__()
        hidden = make_divisible(channels / reduction, divisor)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(squeezed))))
