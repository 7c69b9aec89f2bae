"""Weight initialisation schemes by name, for conv and linear layers.

Each scheme draws weights with a variance chosen so signals keep their scale through
depth. With ``fan_in`` the number of inputs to a unit and ``fan_out`` the number of
units it feeds (both times the kernel area for convolutions):

- ``lecun_normal``: variance 1 / fan_in (LeCun et al., "Efficient BackProp", 1998);
- ``xavier_normal``, ``xavier_uniform``: 2 / (fan_in + fan_out) (Glorot and Bengio,
  AISTATS 2010), a compromise between the forward and the backward pass;
- ``kaiming_{normal,uniform}_fan_in``: 2 / fan_in, keeps the forward scale through
  ReLUs; ``..._fan_out``: 2 / fan_out, keeps the gradient scale (He et al., "Delving
  Deep into Rectifiers", ICCV 2015).

- ``pytorch``: PyTorch's own default, which families that initialise themselves (VGG,
  ResNet: He ``fan_out``) replace: ``reset_parameters()`` of each layer, weights from
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (variance 1 / (3 fan_in)) and biases from the same
  range, not zero.

The uniform versions draw from U(-a, a) with a = sqrt(3 * variance). Kaiming's factor
2 is for ReLU, which zeroes half its inputs. Biases start at zero, but with ``pytorch``.
``"default"`` leaves the model as built (each family's own initialisation, or PyTorch's).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from torch import nn

# A type, so that the command line refuses an unknown scheme and its help lists them.
InitScheme = Literal[
    "default",
    "pytorch",
    "lecun_normal",
    "xavier_normal",
    "xavier_uniform",
    "kaiming_normal_fan_in",
    "kaiming_normal_fan_out",
    "kaiming_uniform_fan_in",
    "kaiming_uniform_fan_out",
]
INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def init_std(scheme: str, fan_in: int, fan_out: int) -> float:
    """Standard deviation that ``scheme`` gives a weight with these fans."""
    if scheme == "lecun_normal":
        return 1 / math.sqrt(fan_in)
    if scheme.startswith("xavier"):
        return math.sqrt(2 / (fan_in + fan_out))
    if scheme.startswith("kaiming"):
        return math.sqrt(2 / (fan_in if scheme.endswith("fan_in") else fan_out))
    raise ValueError(f"no standard deviation for scheme {scheme!r}")


def init_weights(model: nn.Module, scheme: str = "default") -> nn.Module:
    """Re-initialise every conv and linear layer of ``model`` in place; returns it."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    if scheme == "default":
        return model
    for m in model.modules():
        if not isinstance(m, _LAYERS):
            continue
        if scheme == "pytorch":
            m.reset_parameters()
            continue
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
        std = init_std(scheme, fan_in, fan_out)
        if "uniform" in scheme:
            bound = math.sqrt(3.0) * std
            nn.init.uniform_(m.weight, -bound, bound)
        else:
            nn.init.normal_(m.weight, 0.0, std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return model
