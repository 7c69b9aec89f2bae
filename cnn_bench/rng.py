"""Each DDP process's own random numbers (dropout, stochastic layers), saved and restored
rank by rank.

``seed_everything`` seeds every process alike, so without a per-rank seed all processes
draw the same dropout masks: sample ``i`` of every process's batch is dropped out the
same way, and the global batch has the randomness of one process's batch. Rank 0 keeps
the seeded stream (a one-process run is unchanged); every other rank starts from a seed
of its own, after the network is built (the initialisation stays the same everywhere).

A checkpoint holds every rank's CPU state and the state of its own CUDA device,
gathered when it is saved (every rank takes part in a save). A resumed run with the
same number of processes gives each rank its own state back, so it draws exactly what
the uninterrupted run would have. With another number of processes there is no state
to give: each process keeps its seeded stream, and rank zero says so in one line.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning as L
import torch
from torch import Tensor

RANK_SEED_STRIDE = 1_000_003  # a prime, so the ranks' seeds never coincide with a user's


def distinct_rank_streams(trainer: L.Trainer) -> None:
    """Give every rank but 0 a random stream of its own, derived from the run's seed."""
    if trainer.world_size > 1 and trainer.global_rank > 0:
        torch.manual_seed((torch.initial_seed() + RANK_SEED_STRIDE * trainer.global_rank) % 2**63)


def _cuda_device(trainer: L.Trainer) -> torch.device | None:
    device = trainer.strategy.root_device
    return device if device.type == "cuda" else None


def rank_states(trainer: L.Trainer) -> dict[str, Any]:
    """This rank's random states gathered from every rank, for the checkpoint."""
    states = {"torch": torch.get_rng_state()}
    cuda = _cuda_device(trainer)
    if cuda is not None:
        states["cuda"] = torch.cuda.get_rng_state(cuda)
    gathered: dict[str, Any] = {"world_size": trainer.world_size}
    for key, state in states.items():
        if trainer.world_size == 1:
            gathered[key] = [state]
            continue
        # One collective per kind, entered by every rank (saving is a collective already).
        here = state.to(trainer.strategy.root_device)
        every = [torch.empty_like(here) for _ in range(trainer.world_size)]
        torch.distributed.all_gather(every, here)
        gathered[key] = [s.cpu() for s in every]
    return gathered


def restore_rank_states(trainer: L.Trainer, states: dict[str, Any]) -> None:
    """Give this rank back its own random states from a checkpoint."""
    if isinstance(states.get("torch"), Tensor):
        # Written before states were kept per rank: rank zero's CPU state, and the state
        # of every CUDA device of rank zero's machine.
        torch.set_rng_state(states["torch"])
        cuda = states.get("cuda")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        return
    saved = states.get("world_size")
    if saved != trainer.world_size:
        if trainer.is_global_zero:
            print(
                f"cnn-bench: warning: the checkpoint's random states are of {saved} processes "
                f"and this run has {trainer.world_size}: each process keeps its seeded stream, "
                "so dropout draws differ from the interrupted run's",
                file=sys.stderr,
            )
        return
    rank = trainer.global_rank
    torch.set_rng_state(states["torch"][rank])
    cuda = _cuda_device(trainer)
    if cuda is not None and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"][rank], cuda)
