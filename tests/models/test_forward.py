"""Every registered model, every variant: forward and backward at its native size."""

from __future__ import annotations

import pytest
import torch

from cnn_bench.models import create_model, list_models, model_entry, split_aux
from cnn_bench.models.registry import NATIVE_SIZE

CASES = [(name, v) for name in list_models() for v in model_entry(name).variants]
NUM_CLASSES = 7  # not 10 or 1000, so a head that ignores num_classes fails
SIZED_FOR_32 = {"airbench", "alexnet", "lenet", "mlp", "vgg"}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _backward_size(name: str, variant: str) -> int:
    """A small input every layer accepts: the gradient check needs no more.

    ImageNet stems divide by 4 before the first stage, so 64 pixels leave 2x2 maps at
    the end; CIFAR networks divide by 8 (16 pixels leave 2x2), except those whose
    classifier is sized for 32 pixels (flattening MLP, LeNet, AlexNet) or whose pools
    need 32 (VGG's five; airbench's 2x2 stem and three pools leave 3x3 from 32, 1x1 from 16).
    """
    if variant == "imagenet":
        return 64
    return 32 if model_entry(name).family in SIZED_FOR_32 else 16


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_forward_backward(name: str, variant: str) -> None:
    size = NATIVE_SIZE[variant]
    model = create_model(name, NUM_CLASSES, image_size=size)
    # One eval forward at the native size checks the shapes the network is built for.
    with torch.no_grad():
        logits = model.eval()(torch.randn(1, 3, size, size))
    assert logits.shape == (1, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    # Gradients at a smaller size, batch 1 (BN still sees 2x2 maps): a training step
    # exercises every layer, the in-place ReLUs and the auxiliary heads, at a fraction
    # of the CPU time.
    size = _backward_size(name, variant)
    outputs = model.train()(torch.randn(1, 3, size, size))
    logits, aux = split_aux(outputs)
    for out in (logits, *aux):
        assert out.shape == (1, NUM_CLASSES)
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
