"""The model zoo: plain ``nn.Module`` families, one registry."""

from cnn_bench.models import lenet  # noqa: F401  (registers the family)
from cnn_bench.models.registry import create_model, list_models, model_entry, register_model

__all__ = ["create_model", "list_models", "model_entry", "register_model"]
