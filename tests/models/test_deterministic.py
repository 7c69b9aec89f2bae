"""``--trainer.deterministic true`` on CUDA: no registered network's backward pass uses an
operation that PyTorch can only compute non-deterministically there (it would raise at the
first backward). Checked on CPU by walking the autograd graph, at each network's native
input size, with deterministic algorithms on as Lightning sets them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from cnn_bench.layers import pooling
from cnn_bench.models import create_model, list_models, model_entry, split_aux
from cnn_bench.models.registry import NATIVE_SIZE

# Backward functions without a deterministic CUDA kernel (torch.use_deterministic_algorithms).
NONDETERMINISTIC_ON_CUDA = {
    "AdaptiveAvgPool2DBackward0",
    "AdaptiveAvgPool3DBackward0",
    "AdaptiveMaxPool2DBackward0",
    "AdaptiveMaxPool3DBackward0",
    "AvgPool3DBackward0",
    "MaxPool3DWithIndicesBackward0",
    "FractionalMaxPool2DBackward0",
    "FractionalMaxPool3DBackward0",
    "ReflectionPad1DBackward0",
    "ReflectionPad2DBackward0",
    "ReflectionPad3DBackward0",
    "ReplicationPad1DBackward0",
    "ReplicationPad2DBackward0",
    "ReplicationPad3DBackward0",
    "UpsampleLinear1DBackward0",
    "UpsampleBilinear2DBackward0",
    "UpsampleBicubic2DBackward0",
    "UpsampleTrilinear3DBackward0",
    "GridSampler2DBackward0",
    "GridSampler3DBackward0",
    "EmbeddingBagBackward0",
    "IndexSelectBackward0",
    "CtcLossBackward0",
    "NllLoss2DBackward0",
}
CASES = [(name, v) for name in list_models() for v in model_entry(name).variants]


@pytest.fixture
def deterministic() -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def _backward_ops(loss: torch.Tensor) -> set[str]:
    seen, stack, names = set(), [loss.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return names


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_backward_has_a_deterministic_cuda_kernel(
    name: str, variant: str, deterministic: None
) -> None:
    size = NATIVE_SIZE[variant]
    # On the meta device: the graph is built with the real operations, none is computed.
    with torch.device("meta"):
        model = create_model(name, num_classes=10, image_size=size).train()  # aux heads too
        logits, aux = split_aux(model(torch.randn(2, 3, size, size)))
        labels = torch.tensor([0, 1])
        loss = sum((F.cross_entropy(x, labels) for x in (logits, *aux)), start=0)
    ops = _backward_ops(loss)
    assert "ConvolutionBackward0" in ops or "MmBackward0" in ops or "AddmmBackward0" in ops
    assert not ops & NONDETERMINISTIC_ON_CUDA


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize(("size", "out"), [(14, 4), (13, 7), (8, 4), (7, 7), (5, 1), (9, (3, 2))])
def test_deterministic_pooling_equals_torch(
    kind: str, size: int, out: int | tuple[int, int], deterministic: None
) -> None:
    ours = getattr(pooling, f"adaptive_{kind}_pool2d")
    theirs = getattr(F, f"adaptive_{kind}_pool2d")
    x = torch.randn(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    y = ours(x, out)
    torch.use_deterministic_algorithms(False)
    expected = theirs(x, out)
    torch.testing.assert_close(y, expected)
    weights = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), x)
    torch.testing.assert_close(grad, expected_grad)
    assert not _backward_ops(y.sum()) & NONDETERMINISTIC_ON_CUDA
