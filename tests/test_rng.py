"""Per-rank random states in a checkpoint (cnn_bench/rng.py) for one process; the DDP
case, rank for rank across a resume, is in tests/test_ddp_preemption.py."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from cnn_bench.rng import rank_states, restore_rank_states


@pytest.fixture
def trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)


def test_one_process_gets_its_state_back(trainer: L.Trainer) -> None:
    states = rank_states(trainer)
    assert states["world_size"] == 1 and len(states["torch"]) == 1
    expected = torch.rand(4)
    restore_rank_states(trainer, states)
    assert torch.equal(torch.rand(4), expected)


def test_another_number_of_processes_keeps_the_stream_with_one_line(
    trainer: L.Trainer, capsys: pytest.CaptureFixture
) -> None:
    other = torch.Generator().manual_seed(1).get_state()
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    restore_rank_states(trainer, {"world_size": 2, "torch": [other, other]})
    assert torch.equal(torch.rand(4), expected)  # the seeded stream, not the checkpoint's
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("cnn-bench: warning:") and "of 2 processes" in line


def test_a_checkpoint_from_before_per_rank_states_still_restores(trainer: L.Trainer) -> None:
    state = torch.get_rng_state()
    expected = torch.rand(4)
    restore_rank_states(trainer, {"torch": state})
    assert torch.equal(torch.rand(4), expected)
