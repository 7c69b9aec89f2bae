"""The model zoo: plain ``nn.Module`` families, one registry."""

from cnn_bench.models import airbench, lenet  # noqa: F401  (registers the families)
from cnn_bench.models.registry import create_model, list_models, model_entry, register_model

__all__ = ["create_model", "list_models", "model_entry", "register_model"]
