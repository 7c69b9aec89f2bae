"""Warmup schedules: linear warmup, then the promised decay down to min_factor."""

import math

import pytest
import torch

from cnn_bench.schedules import (
    ScheduleLengthError,
    WarmupCosineLR,
    WarmupLinearLR,
    check_resumed_length,
)


def _lrs(schedule, steps: int = 11) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = schedule(optimizer, total_steps=10, warmup_steps=2, min_factor=0.1)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize(
    ("schedule", "middle"),
    [(WarmupCosineLR, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))), (WarmupLinearLR, 0.55)],
)
def test_warmup_then_decay(schedule, middle: float) -> None:
    lrs = _lrs(schedule)
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])  # warmup, then the peak
    assert lrs[6] == pytest.approx(middle)  # half-way through the decay
    assert lrs[10] == pytest.approx(0.1)  # ends at min_factor
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))


def test_unknown_length_is_a_clear_error() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="total_steps is unknown"):
        WarmupCosineLR(optimizer)


def test_a_fixed_length_schedule_resumed_with_another_length_is_refused() -> None:
    """The length it was built for is in its state_dict, so a resume can compare it."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    resumed = WarmupCosineLR(optimizer, total_steps=60)
    resumed.load_state_dict(WarmupCosineLR(optimizer, total_steps=30).state_dict())
    with pytest.raises(ScheduleLengthError, match="WarmupCosineLR schedule of 30 steps.*plans 60"):
        check_resumed_length(resumed, 60, "last.ckpt", "steps")
    check_resumed_length(resumed, 30, "last.ckpt", "steps")  # the same budget goes on


def test_bind_run_length_fills_only_an_empty_total_and_scales_max_lr() -> None:
    """What the module gives the trainer: the run's length where the YAML left it out,
    OneCycleLR's peak scaled like the optimizer's rate, everything else as written."""
    import functools

    from cnn_bench.schedules import bind_run_length

    empty = functools.partial(WarmupCosineLR, total_steps=None, warmup_steps=3)
    assert bind_run_length(empty, 120).keywords == {"total_steps": 120, "warmup_steps": 3}
    given = functools.partial(WarmupCosineLR, total_steps=50)
    assert bind_run_length(given, 120).keywords == {"total_steps": 50}
    one_cycle = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.4, total_steps=None)
    bound = bind_run_length(one_cycle, 30, lr_scale=2.0)
    assert bound.keywords == {"max_lr": pytest.approx(0.8), "total_steps": 30}
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert bound(optimizer).total_steps == 30
    step = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=5)
    assert bind_run_length(step, 30) is step  # no length to fill: unchanged


def test_inverse_decays_give_c_over_t_and_c_over_sqrt_t() -> None:
    from cnn_bench.schedules import inverse, inverse_sqrt

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, inverse)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.6, 0.3, 0.2, 0.15])
    assert [inverse_sqrt(t) for t in (0, 3, 8)] == pytest.approx([1.0, 0.5, 1 / 3])
