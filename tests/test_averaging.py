"""The device-side accumulators against the torch and torchmetrics code they replace:
the same numbers, with no host read per update."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics.classification import MulticlassAccuracy

from cnn_bench.averaging import EMA, TopKAccuracy
from cnn_bench.models import create_model


@pytest.mark.parametrize("k", [1, 5])
def test_top_k_accuracy_equals_torchmetrics(k: int) -> None:
    gen = torch.Generator().manual_seed(0)
    ours, theirs = TopKAccuracy(k), MulticlassAccuracy(10, top_k=k, average="micro")
    for n in (64, 64, 7):  # a short last batch
        scores, labels = torch.randn(n, 10, generator=gen), torch.randint(10, (n,), generator=gen)
        ours.update(scores, labels)
        theirs.update(scores, labels)
    assert ours.compute().item() == pytest.approx(theirs.compute().item(), abs=1e-7)


def _trained_step(model: nn.Module, seed: int) -> None:
    """One SGD step on random data: changes weights and batch-norm statistics."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    loss = model(torch.randn(8, 3, 32, 32, generator=gen)).square().mean()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
            p.grad = None


def test_ema_equals_torch_averaged_model() -> None:
    torch.manual_seed(0)
    model = create_model("airbench94", num_classes=10, image_size=32)  # batch norm
    ours = EMA(model, 0.9)
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for step in range(4):
        _trained_step(model, step)
        ours.update_parameters(model)
        theirs.update_parameters(model)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and int(a["n_averaged"]) == 4
    for key, value in a.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, b[key], rtol=1e-6, atol=1e-7)
    assert not any(p.requires_grad for p in ours.parameters())


def test_ema_resumed_from_its_state_dict_continues_the_average() -> None:
    """After loading, the first update averages (it does not copy the network again)."""
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, image_size=32)
    ema = EMA(model, 0.5)
    _trained_step(model, 0)
    ema.update_parameters(model)
    _trained_step(model, 1)
    resumed = EMA(copy.deepcopy(model), 0.5)
    resumed.load_state_dict(ema.state_dict())
    ema.update_parameters(model)
    resumed.update_parameters(model)
    for (key, value), other in zip(
        ema.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(value, other), key
    # and the average is not the network itself
    net = model.state_dict()
    assert any(not torch.equal(v, net[k]) for k, v in ema.module.state_dict().items())


def test_ema_decay_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="ema_decay must be in"):
        EMA(nn.Linear(2, 2), 1.5)
