"""Building blocks shared by model families, one concept per file."""

from cnn_bench.layers.conv_norm_act import ConvNormAct
from cnn_bench.layers.pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, adaptive_avg_pool2d
from cnn_bench.layers.se import SqueezeExcite, make_divisible

__all__ = [
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "ConvNormAct",
    "SqueezeExcite",
    "adaptive_avg_pool2d",
    "make_divisible",
]
