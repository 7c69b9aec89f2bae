"""Every registered model, every variant: forward and backward at its native size."""

from __future__ import annotations

import pytest
import torch

from cnn_bench.models import create_model, list_models, model_entry, split_aux
from cnn_bench.models.registry import NATIVE_SIZE

CASES = [(name, v) for name in list_models() for v in model_entry(name).variants]
NUM_CLASSES = 7  # not 10 or 1000, so a head that ignores num_classes fails


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_forward_backward(name: str, variant: str) -> None:
    size = NATIVE_SIZE[variant]
    model = create_model(name, NUM_CLASSES, image_size=size)
    if variant == "imagenet":
        # One eval forward at 224 checks the native shapes; the gradient check runs at 64
        # pixels, which every ImageNet network here accepts, to keep CPU time down.
        with torch.no_grad():
            logits = model.eval()(torch.randn(1, 3, size, size))
        assert logits.shape == (1, NUM_CLASSES)
        assert torch.isfinite(logits).all()
        size = 64
    model.train()
    outputs = model(torch.randn(2, 3, size, size))
    logits, aux = split_aux(outputs)
    for out in (logits, *aux):
        assert out.shape == (2, NUM_CLASSES)
        assert torch.isfinite(out).all()
    sum(o.square().mean() for o in (logits, *aux)).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_in_chans() -> None:
    model = create_model("resnet18", 10, in_chans=1, image_size=28)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_mlp_gets_image_size_from_create_model() -> None:
    model = create_model("mlp", 10, in_chans=1, image_size=28, depth=1, width=16)
    assert model.layers[1].in_features == 28 * 28
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_logreg_is_one_linear_layer() -> None:
    model = create_model("logreg", 10)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3 * 32 * 32, 10)]
