"""Batch norm at test time (``--bn_test.mode``): precise statistics equal the batches'
own means and variances computed by hand, batch mode equals a network in training mode,
and the default changes nothing."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from torch import nn

from cnn_bench.callbacks import BatchNormTestMode
from cnn_bench.callbacks.batchnorm import recompute_statistics
from cnn_bench.default_callbacks import DEFAULT_CALLBACKS
from tests.conftest import REPO


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),  # must stay off while the statistics are recomputed
        nn.Conv2d(4, 5, 3),
        nn.BatchNorm2d(5),
    )


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(6, 3, 8, 8, generator=g) * 2 + 1 for _ in range(3)]


def _by_hand(net: nn.Sequential, batches: list[torch.Tensor]) -> list[tuple]:
    """Each batch norm's input, batch by batch, with batch norm normalising by the
    batch's own (biased) statistics and no dropout: the average of the batch means and
    of the unbiased batch variances."""
    conv1, bn1, _, _, conv2, _ = net
    first, second = [], []
    with torch.no_grad():
        for x in batches:
            h1 = conv1(x)
            m, v = h1.mean((0, 2, 3)), h1.var((0, 2, 3), correction=0)
            first.append((m, h1.var((0, 2, 3))))
            y1 = (h1 - m[None, :, None, None]) / torch.sqrt(v[None, :, None, None] + bn1.eps)
            y1 = torch.relu(y1 * bn1.weight[None, :, None, None] + bn1.bias[None, :, None, None])
            h2 = conv2(y1)
            second.append((h2.mean((0, 2, 3)), h2.var((0, 2, 3))))
    return [
        (torch.stack([m for m, _ in s]).mean(0), torch.stack([v for _, v in s]).mean(0))
        for s in (first, second)
    ]


def test_precise_statistics_are_the_mean_and_variance_over_the_batches():
    net = _net()
    net[1].weight.data.uniform_(0.5, 2)  # not the identity, so the second layer depends on it
    net.eval()
    expected = _by_hand(net, _batches())
    assert recompute_statistics(net, _batches()) == 3
    for bn, (mean, var) in zip((net[1], net[5]), expected, strict=True):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
        assert bn.momentum == 0.1, "the layer's own momentum is given back"
    assert not net.training, "left in the mode it was in"


def test_precise_statistics_are_reduced_over_processes():
    net = _net()
    recompute_statistics(net, _batches(), reduce=lambda t: torch.full_like(t, 7.0))
    assert torch.equal(net[1].running_mean, torch.full((4,), 7.0))
    assert torch.equal(net[5].running_var, torch.full((5,), 7.0))


class _Module(nn.Module):
    """What the callback reads of an ImageClassifier: the network as ``model``."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(*list(_net())[:3], *list(_net())[4:])  # no dropout


def _trained(module: _Module) -> None:
    module.train()
    with torch.no_grad():
        for x in _batches():
            module.model(x)  # running statistics away from their 0 and 1
    module.eval()


def test_batch_mode_gives_the_output_of_the_network_in_training_mode():
    module = _Module()
    _trained(module)
    before = copy.deepcopy(module.state_dict())
    x = torch.randn(10, 3, 8, 8) * 3
    in_training = copy.deepcopy(module.model).train()(x)
    callback = BatchNormTestMode("batch")
    callback.on_test_start(None, module)
    with torch.no_grad():
        out = module.model(x)
    torch.testing.assert_close(out, in_training)
    assert not torch.allclose(out, copy.deepcopy(module.model).eval()(x), atol=1e-3)
    callback.on_test_end(None, module)
    for name, value in module.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed by testing"
    assert all(not m.training for m in module.modules())
    assert module.model[1].momentum == 0.1


def test_running_mode_is_the_default_and_changes_nothing():
    defaults = yaml.safe_load((REPO / "configs" / "trainer" / "default.yaml").read_text())
    assert DEFAULT_CALLBACKS["bn_test"] is BatchNormTestMode
    assert defaults["bn_test"]["mode"] == "running" == BatchNormTestMode().mode
    module = _Module()
    _trained(module)
    x = torch.randn(4, 3, 8, 8)
    expected = module.model(x)
    before = copy.deepcopy(module.state_dict())
    callback = BatchNormTestMode()
    callback.on_test_start(None, module)
    assert torch.equal(module.model(x), expected)
    callback.on_test_end(None, module)
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


@pytest.mark.parametrize("mode", ["precise", "batch"])
def test_a_network_without_batch_norm_is_left_alone(mode):
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    assert recompute_statistics(net, _batches()) == 0
    module = nn.Module()
    module.model = net.eval()
    BatchNormTestMode(mode).on_test_start(None, module)
    assert not net.training
