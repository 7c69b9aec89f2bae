"""Adaptive pooling whose backward pass is deterministic on CUDA.

PyTorch has no deterministic CUDA kernel for the backward of ``adaptive_avg_pool2d``
(to sizes other than 1) or ``adaptive_max_pool2d``: with ``--trainer.deterministic
true`` the first backward raises. These drop-in replacements (same class names'
behaviour, no parameters, the same outputs) compute the same pooling from operations
that do have deterministic backward kernels when deterministic algorithms are on:
nothing when the input already has the output size, a plain pooling with
kernel = stride when the sizes divide, else the mean of each adaptive window. With
deterministic algorithms off they are PyTorch's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair


def _windows(size: int, out: int) -> list[tuple[int, int]]:
    """Adaptive pooling's windows along one axis: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _adaptive_pool2d(x: Tensor, output_size: int | tuple[int, int], kind: str) -> Tensor:
    out_h, out_w = _pair(output_size)
    if not torch.are_deterministic_algorithms_enabled():
        return getattr(F, f"adaptive_{kind}_pool2d")(x, (out_h, out_w))
    h, w = x.shape[-2:]
    if (h, w) == (out_h, out_w):
        return x
    if h % out_h == 0 and w % out_w == 0:
        return getattr(F, f"{kind}_pool2d")(x, (h // out_h, w // out_w))
    reduce = Tensor.mean if kind == "avg" else Tensor.amax
    rows = [
        torch.stack([reduce(x[..., a:b, c:d], dim=(-2, -1)) for c, d in _windows(w, out_w)], -1)
        for a, b in _windows(h, out_h)
    ]
    return torch.stack(rows, dim=-2)


def adaptive_avg_pool2d(x: Tensor, output_size: int | tuple[int, int]) -> Tensor:
    return _adaptive_pool2d(x, output_size, "avg")


def adaptive_max_pool2d(x: Tensor, output_size: int | tuple[int, int]) -> Tensor:
    return _adaptive_pool2d(x, output_size, "max")


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    def forward(self, x: Tensor) -> Tensor:
        return adaptive_avg_pool2d(x, self.output_size)


class AdaptiveMaxPool2d(nn.AdaptiveMaxPool2d):
    def forward(self, x: Tensor) -> Tensor:
        return adaptive_max_pool2d(x, self.output_size)
