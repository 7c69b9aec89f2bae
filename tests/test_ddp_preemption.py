"""SIGTERM under real two-process DDP (gloo), reaching the processes at different times,
and each process's random stream across the resume. Every run has a timeout: a hang
fails the test (``tests/test_ddp.py`` has the runner)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.conftest import REPO
from tests.test_ddp import DDP, LENET, TIMEOUT, _ok, finish, run_ddp, start_ddp

STEPS = 240  # 4 epochs of 60 steps


class RecordRandomStream(Callback):
    """When fit ends, each rank's next draws from its CPU random stream (what dropout
    would draw next), in ``draws-rank<r>.json`` of the working folder."""

    def on_train_end(self, trainer, pl_module) -> None:
        draws = torch.rand(8).tolist()
        Path(f"draws-rank{trainer.global_rank}.json").write_text(json.dumps(draws))


def _config(tmp_path: Path) -> str:
    """The default callbacks with last.ckpt every 25 steps; the preemption flags are agreed
    on every 50 steps, so a process signalled alone goes on training with the others until
    the agreed step."""
    path = tmp_path / "callbacks.yaml"
    path.write_text(
        f"""
checkpoint: {{every_n_train_steps: 25}}
save_on_preemption: {{every_n_steps: 50}}
trainer:
  callbacks:
    - class_path: {__name__}.RecordRandomStream
"""
    )
    return str(path)


def _last(root: Path) -> Path:
    (path,) = root.glob("cnn_bench/*/checkpoints/last.ckpt")
    return path


def _step_of(root: Path) -> int:
    try:
        return torch.load(_last(root), weights_only=False)["global_step"]
    except Exception:  # not written yet, or being replaced right now
        return -1


def _rank_pid(parent: int, rank: int) -> int:
    """The process of ``rank``: a child of rank 0 that Lightning started with LOCAL_RANK."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        for pid in children:
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"LOCAL_RANK={rank}".encode() in env:
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no process of rank {rank}")


def _draws(root: Path) -> list[list[float]]:
    return [json.loads((root / f"draws-rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_sigterm_at_different_times_stops_every_rank_and_resumes_exactly(
    tmp_path: Path, cli_env: dict
) -> None:
    """SIGTERM to rank 1 alone, then to rank 0 a second later: no hang, one checkpoint of
    the agreed step, and a resume that ends with the uninterrupted run's weights and
    each rank's random stream where the uninterrupted run left it."""
    env = {**cli_env, "PYTHONPATH": str(REPO)}
    args = [
        "fit",
        "--config",
        LENET,
        "--config",
        _config(tmp_path),
        *DDP,
        "--model.arch_kwargs",
        "{dropout: 0.5}",  # the random stream matters to the weights
        "--trainer.max_epochs",
        "4",
        "--trainer.limit_train_batches",
        "60",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
    ]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    straight.mkdir(), stopped.mkdir()
    _ok(run_ddp(args, straight, {**env, "WANDB_DIR": str(straight)}))

    env = {**env, "WANDB_DIR": str(stopped)}
    proc = start_ddp(args, stopped, env)
    rank1 = _rank_pid(proc.pid, 1)
    deadline = time.monotonic() + TIMEOUT
    while _step_of(stopped) < 25:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint at step 25"
        time.sleep(0.05)
    os.kill(rank1, signal.SIGTERM)
    time.sleep(1.0)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    done = finish(proc)
    _ok(done)
    (line,) = [x for x in done.stderr.splitlines() if "stopped by SIGTERM at step" in x]
    step = int(line.split("at step ")[1].split(";")[0])
    assert step % 50 == 0 and 25 < step < STEPS
    assert _step_of(stopped) == step

    _ok(run_ddp([*args, "--ckpt_path", "last"], stopped, env))
    a = torch.load(_last(straight), weights_only=False)
    b = torch.load(_last(stopped), weights_only=False)
    assert a["global_step"] == b["global_step"] == STEPS
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    # Each rank draws its own numbers, and after the resume the same ones as without it.
    assert _draws(straight) == _draws(stopped)
    assert _draws(straight)[0] != _draws(straight)[1]
