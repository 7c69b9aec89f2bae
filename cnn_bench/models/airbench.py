"""airbench (Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv 2404.00498),
the network of the CIFAR-10 speed runs, descended from Page's ResNet-9 ("How to train your
ResNet", 2018).

A 2x2 convolution without padding (31x31 maps), then three groups of conv, max-pool,
BN, GELU, conv, BN, GELU, each halving the resolution, a global max-pool and a
bias-free linear head whose output is scaled by 1/9: with BatchNorm's unit-scale features
the raw logits start too large for label-smoothed cross-entropy, and the paper found 1/9
best. The paper initialises the first layer by whitening CIFAR-10's 2x2 patches; here it
is learned, since a network in the zoo never sees the data set at construction.
"""

from __future__ import annotations

from torch import Tensor, nn

from cnn_bench.layers import AdaptiveMaxPool2d
from cnn_bench.models.registry import register_model

# Widths of the stem and the three groups in the paper's airbench94; a smaller
# compute budget narrows them through the ``widths`` keyword.
AIRBENCH94_WIDTHS = (24, 64, 256, 256)


class ConvGroup(nn.Sequential):
    """conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU: pooling before the first BN halves
    the cost of the normalisation and activation (Page 2018)."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(
            nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(out_chans),
            nn.GELU(),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_chans),
            nn.GELU(),
        )


class AirBench(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int, int] = AIRBENCH94_WIDTHS,
        logit_scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        stem, *groups = widths
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem, kernel_size=2), nn.GELU())
        self.groups = nn.Sequential(
            *(ConvGroup(a, b) for a, b in zip([stem, *groups[:-1]], groups, strict=True))
        )
        self.pool = AdaptiveMaxPool2d(1)
        self.head = nn.Linear(groups[-1], num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.groups(self.stem(x))).flatten(1)
        return self.head(x) * self.logit_scale


@register_model
def airbench94(**kwargs) -> AirBench:
    return AirBench(**kwargs)
