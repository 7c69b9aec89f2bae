"""Building blocks shared by model families, one concept per file."""

from cnn_bench.layers.conv_norm_act import ConvNormAct
from cnn_bench.layers.se import SqueezeExcite, make_divisible

__all__ = ["ConvNormAct", "SqueezeExcite", "make_divisible"]
