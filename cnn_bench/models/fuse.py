"""Fold batch norm into the convolution or linear layer that feeds it, for inference.

In eval mode batch norm is an affine map per channel, ``y = g * (x - mu) / s + b`` with
``s = sqrt(var + eps)``, so ``bn(conv(x))`` equals one convolution with weight
``W * g / s`` and bias ``(bias - mu) * g / s + b``.

Which pairs can be folded is read from the data flow, not from layer names: the model is
traced with ``torch.fx`` and a BN is folded when its only input is a conv or linear
layer whose output goes nowhere else, and each is called once. The folded BN becomes
``nn.Identity`` in a copy of the original module tree, so the result is still the same
class with the same forward.

Pre-activation networks (ResNetV2) run BN-ReLU-conv: a BN that follows an addition
or a pooling, as each block's first one and the final one, cannot be folded into
anything and stays. Only the BNs that directly follow a convolution inside a block
(``conv1 -> norm2``, ``conv2 -> norm3``) are folded. Modules the eval-mode forward
never calls (GoogLeNet's auxiliary classifiers) are not traced and keep their BNs.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def fold_bn_into(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold eval-mode ``bn`` into the weight and bias of ``layer`` (in place), with
    PyTorch's own fusion arithmetic (``torch.nn.utils.fusion``)."""
    fuse = fuse_linear_bn_weights if isinstance(layer, nn.Linear) else fuse_conv_bn_weights
    stats = (bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    layer.weight, layer.bias = fuse(layer.weight, layer.bias, *stats)


def _foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer name, BN name) for each BN whose sole input is a conv/linear used once."""
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _NORMS):
            continue
        src = node.args[0]
        if (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(modules[src.target], _FOLDABLE)
            and len(src.users) == 1
            and calls[src.target] == 1
            and calls[node.target] == 1
        ):
            pairs.append((src.target, node.target))
    return pairs


def fuse_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every foldable batch norm folded away."""
    fused = copy.deepcopy(model).eval()
    for layer_name, bn_name in _foldable_pairs(fused):
        fold_bn_into(fused.get_submodule(layer_name), fused.get_submodule(bn_name))
        parent_name, _, child = bn_name.rpartition(".")
        setattr(fused.get_submodule(parent_name), child, nn.Identity())
    return fused
