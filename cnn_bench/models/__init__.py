"""The model zoo: plain ``nn.Module`` families, one registry.

Importing this package imports every family module, which registers its builders.
"""

from cnn_bench.models import (  # noqa: F401  (each import registers a family)
    airbench,
    alexnet,
    googlenet,
    lenet,
    mlp,
    nin,
    resnet,
    vgg,
)
from cnn_bench.models.fuse import fuse_bn
from cnn_bench.models.googlenet import AUX_LOSS_WEIGHT, split_aux
from cnn_bench.models.init import INIT_SCHEMES, init_weights
from cnn_bench.models.registry import create_model, list_models, model_entry, register_model

__all__ = [
    "AUX_LOSS_WEIGHT",
    "INIT_SCHEMES",
    "create_model",
    "fuse_bn",
    "init_weights",
    "list_models",
    "model_entry",
    "register_model",
    "split_aux",
]
