"""Interrupted and finished runs: every way a run ends leaves its last step, and a run
resumed from any checkpoint ends bit for bit where the uninterrupted run ends.

Every run is a real `cnn-bench` process on LeNet-5 with 30-step epochs on CPU."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from tests.test_resilience import EXPERIMENT, _fit_cmd, _in, _last, _load, _step_of, _wait_for

EPOCH = 30  # training steps per epoch
# Short epochs and a short validation, with the default callbacks (progress bar included).
SMALL = [
    "--trainer.limit_train_batches",
    str(EPOCH),
    "--trainer.limit_val_batches",
    "2",
    "--trainer.accelerator",
    "cpu",
]


def _fit(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    root.mkdir(exist_ok=True)
    result = run_cli(["fit", "--config", EXPERIMENT, *SMALL, *args], cwd=root, env=_in(root, env))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _assert_same_training_state(a: dict, b: dict) -> None:
    """Weights, buffers, logged metric states and optimizer state, bit for bit."""
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        assert opt_a["state"].keys() == opt_b["state"].keys()
        for index, state in opt_a["state"].items():
            for name, value in state.items():
                assert torch.equal(value, opt_b["state"][index][name]), (index, name)
    assert a["lr_schedulers"] == b["lr_schedulers"]


def test_resume_from_an_epoch_end_checkpoint_is_exact(tmp_path: Path, cli_env: dict) -> None:
    """With ``max_steps`` the run resumed from an epoch-end last.ckpt used to shuffle every
    later epoch as the next one (Lightning's epoch counter runs one ahead there)."""
    budget = ["--trainer.max_steps", str(3 * EPOCH), "--trainer.max_epochs", "-1"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _fit(straight, cli_env, *budget)

    killed.mkdir()
    proc = subprocess.Popen(
        _fit_cmd(*SMALL, *budget),
        cwd=killed,
        env=_in(killed, cli_env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # The default callbacks write last.ckpt at the end of an epoch only (every 500 steps
    # otherwise): the first one seen is the end of an epoch.
    _wait_for(lambda: _step_of(killed) >= EPOCH, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    interrupted_at = _step_of(killed)
    assert interrupted_at in (EPOCH, 2 * EPOCH)

    resumed = _fit(killed, cli_env, *budget, "--ckpt_path", "last")
    assert "resuming run" in resumed.stderr
    a, b = _load(_last(straight)), _load(_last(killed))
    assert a["global_step"] == 3 * EPOCH
    _assert_same_training_state(a, b)
    _assert_same_record(straight, killed)


def test_max_steps_in_the_middle_of_an_epoch_leaves_last_ckpt_at_that_step(
    tmp_path: Path, cli_env: dict, every_25_steps: str
) -> None:
    """55 steps: 5 after the periodic save of step 50, in the middle of the second epoch
    (the end of a run by max_time or early stopping takes the same path)."""
    result = _fit(tmp_path, cli_env, "--config", every_25_steps, "--trainer.max_steps", "55")
    assert "55 steps in" in result.stderr
    assert _load(_last(tmp_path))["global_step"] == 55


def test_extending_a_finished_one_cycle_run_is_refused_in_one_line(
    tmp_path: Path, cli_env: dict
) -> None:
    _fit(tmp_path, cli_env, "--trainer.max_epochs", "1")
    last = _last(tmp_path)
    before = last.read_bytes()
    result = run_cli(
        ["fit", "--config", EXPERIMENT, *SMALL, "--trainer.max_epochs", "2", "--ckpt_path", "last"],
        cwd=tmp_path,
        env=_in(tmp_path, cli_env),
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (error,) = [x for x in result.stderr.splitlines() if x.startswith("cnn-bench: error:")]
    assert "OneCycleLR schedule of 30 steps" in error and "plans 60" in error
    assert "without --ckpt_path" in error
    assert last.read_bytes() == before  # the finished run is kept as it was


@pytest.mark.parametrize(
    "budget",
    [("--trainer.max_epochs", 1, 2), ("--trainer.max_steps", 45, 90)],
    ids=["max_epochs", "max_steps_mid_epoch"],
)
def test_extending_a_finished_run_without_a_fixed_length_schedule_is_exact(
    tmp_path: Path, cli_env: dict, budget: tuple[str, int, int]
) -> None:
    """A finished run continued with --ckpt_path last and a larger budget ends where one run
    with that budget ends: from the end of an epoch, and from the middle of one."""
    option, short, full = budget
    schedule = tmp_path / "step_lr.yaml"
    schedule.write_text(
        "model:\n  lr_scheduler:\n    class_path: torch.optim.lr_scheduler.StepLR\n"
        "    init_args: {step_size: 40, gamma: 0.5}\n"
    )
    args = ["--config", str(schedule)]
    if option == "--trainer.max_steps":
        args += ["--trainer.max_epochs", "-1"]
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    _fit(straight, cli_env, *args, option, str(full))
    _fit(extended, cli_env, *args, option, str(short))
    resumed = _fit(extended, cli_env, *args, option, str(full), "--ckpt_path", "last")
    assert "resuming run" in resumed.stderr
    a, b = _load(_last(straight)), _load(_last(extended))
    assert a["global_step"] == (2 * EPOCH if option == "--trainer.max_epochs" else full)
    # StepLR halves the learning rate every 40 steps.
    assert a["lr_schedulers"][0]["_last_lr"] == [0.05 * 0.5 ** (a["global_step"] // 40)]
    _assert_same_training_state(a, b)
    _assert_same_record(straight, extended)


def _assert_same_record(straight: Path, resumed: Path) -> None:
    """metrics.json continues across the resume: the epochs before it kept, none twice,
    each epoch's numbers those of the run that never stopped."""
    rows = [json.loads(next(root.glob("cnn_bench/*/metrics.json")).read_text())["history"]
            for root in (straight, resumed)]  # fmt: skip
    assert [r["epoch"] for r in rows[1]] == [r["epoch"] for r in rows[0]]
    for key in ("step", "val/acc1", "val/loss", "train/loss"):
        assert [r[key] for r in rows[1]] == pytest.approx([r[key] for r in rows[0]]), key


def test_a_crash_while_writing_metrics_json_keeps_the_previous_record(tmp_path: Path) -> None:
    """metrics.json is rewritten after every epoch: a process that dies in the middle of a
    write (here past a 100 kB file size limit, as on a full disk) keeps the previous one."""
    script = """
import resource, sys
import lightning as L
from cnn_bench.callbacks import RunSummary

trainer = L.Trainer(default_root_dir=sys.argv[1], logger=False, enable_checkpointing=False)
summary = RunSummary()
summary.record = {"epochs": 1}
summary.on_fit_end(trainer, None)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
summary.record = {"epochs": 2, "history": ["x" * 200_000]}
summary.on_fit_end(trainer, None)
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 1 and "File too large" in result.stderr, result.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def _stderr_until(proc: subprocess.Popen, marker: str, timeout: float = 120) -> list[str]:
    """The lines the run writes to stderr up to the first that contains ``marker``."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        assert line, f"run ended early: {''.join(lines)[-3000:]}"
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} within {timeout} s")


@pytest.mark.parametrize("when", ["importing", "importing_console_script", "setting_up"])
def test_sigterm_during_start_up_exits_cleanly_with_one_line_and_requeues(
    tmp_path: Path, cli_env: dict, when: str
) -> None:
    """Before the training loop: while torch and Lightning import (the first second; under
    ``python -m cnn_bench.cli`` and the ``cnn-bench`` script), or once the trainer is
    built, while the data loads and the model is set up. Under SLURM
    the job is requeued: ``scontrol`` here is a script that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "requeued"}\n')
    scontrol.chmod(0o755)
    env = {**cli_env, "SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}:{cli_env['PATH']}"}
    command = _fit_cmd(*SMALL)
    if when == "importing_console_script":
        command[:3] = [str(Path(sys.executable).parent / "cnn-bench")]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if when.startswith("importing"):
        time.sleep(1.0)
        before = []
    else:
        before = _stderr_until(proc, "GPU available")  # printed when the Trainer is built
    proc.send_signal(signal.SIGTERM)
    stderr = "".join(before) + proc.communicate(timeout=120)[1]
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    (line,) = [x for x in stderr.splitlines() if "SIGTERM" in x]
    assert line.startswith("cnn-bench: stopped by SIGTERM outside the training loop")
    assert "--ckpt_path last" in line
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
    assert not list(tmp_path.glob("cnn_bench/*/checkpoints/*.ckpt"))  # no step was trained
