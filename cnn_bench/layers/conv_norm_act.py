"""Convolution, batch norm, ReLU: the unit most classic CNNs are stacked from."""

from __future__ import annotations

from torch import nn


class ConvNormAct(nn.Sequential):
    """``conv -> bn -> act`` with children named ``conv``, ``bn``, ``act``.

    The names match torchvision's ``BasicConv2d`` (GoogLeNet), so its state dicts load
    unchanged. Without a norm the convolution keeps its bias; with one the bias is
    redundant (batch norm subtracts the mean) and dropped.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        norm: bool = True,
        bn_eps: float = 1e-5,
        act: bool = True,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=not norm
        )
        if norm:
            self.bn = nn.BatchNorm2d(out_chs, eps=bn_eps)
        if act:
            self.act = nn.ReLU(inplace=True)
