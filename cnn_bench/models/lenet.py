"""LeNet-5 (LeCun, Bottou, Bengio, Haffner, "Gradient-based learning applied to
document recognition", Proc. IEEE 1998).

The 6-16-120-84 layout: two 5x5 convolutions with subsampling, then three fully
connected layers. The paper's network uses tanh and average pooling (its
"subsampling" layers); ReLU with max pooling is the modern option. On 32x32
inputs the feature map before the classifier is 16x5x5, exactly as in the paper.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from cnn_bench.models.registry import register_model


class LeNet5(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        activation: Literal["tanh", "relu"] = "tanh",
        pool: Literal["avg", "max"] = "avg",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
        pool_layer = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}[pool]
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, kernel_size=5),
            act(),
            pool_layer(2),  # C1, S2
            nn.Conv2d(6, 16, kernel_size=5),
            act(),
            pool_layer(2),  # C3, S4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            act(),  # C5 is a full 5x5 convolution, i.e. linear
            nn.Linear(120, 84),
            act(),  # F6
            nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_model
def lenet5(**kwargs) -> LeNet5:
    return LeNet5(**kwargs)
