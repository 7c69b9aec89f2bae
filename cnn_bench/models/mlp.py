"""The fully connected baseline: a multilayer perceptron on flattened pixels.

With ``depth=0`` it is multinomial logistic regression (one linear layer and the
softmax in the loss). Deep, narrow tanh MLPs are also the classic test bed for weight
initialisation (LeCun et al., "Efficient BackProp", 1998; Glorot and Bengio,
"Understanding the difficulty of training deep feedforward neural networks", AISTATS
2010), which is why the activation is configurable.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from cnn_bench.models.registry import register_model

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units, then a linear classifier.

    ``layers`` is one flat ``nn.Sequential`` (Flatten, then Linear-act-Dropout per hidden
    layer, then the classifier) so a test or a probe can walk it layer by layer.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        image_size: int = 32,
        depth: int = 2,
        width: int = 512,
        activation: Literal["relu", "tanh"] = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        features = in_chans * image_size * image_size
        for _ in range(depth):
            layers += [nn.Linear(features, width), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


@register_model
def mlp(image_size: int = 32, **kwargs) -> MLP:
    return MLP(image_size=image_size, **kwargs)


@register_model
def logreg(image_size: int = 32, **kwargs) -> MLP:
    return MLP(image_size=image_size, depth=0, **kwargs)
