"""Training that survives: kill and resume exactly, SIGTERM, atomic checkpoints, divergence,
reproducible seeds, and real two-process DDP. Every run is a real `cnn-bench` process."""

from __future__ import annotations

import json
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
import torch

from tests.conftest import REPO, run_cli
from tests.wandb_files import read_wandb_run

EXPERIMENT = str(REPO / "configs/experiment/lenet5_cifar10.yaml")
# A short run: 2 epochs of 60 steps, with the default callbacks, progress bar included.
SHORT = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "60"]


def _in(root: Path, env: dict) -> dict:
    """The environment of a run that keeps its runs in ``root``."""
    return {**env, "WANDB_DIR": str(root)}


def _fit_cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "cnn_bench.cli", "fit", "--config", EXPERIMENT, *extra]


def _last(root: Path) -> Path:
    (path,) = root.glob("cnn_bench/*/checkpoints/last.ckpt")
    return path


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"run ended early: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.05)


def _step_of(root: Path) -> int:
    paths = list(root.glob("cnn_bench/*/checkpoints/last.ckpt"))
    if not paths:
        return -1
    try:
        return _load(paths[0])["global_step"]
    except Exception:  # being replaced right now
        return -1


def test_killed_run_resumes_to_the_same_weights_and_metrics(
    tmp_path: Path, cli_env: dict, every_25_steps: str
) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    args = ["--config", every_25_steps, *SHORT]

    done = run_cli(["fit", "--config", EXPERIMENT, *args], cwd=straight, env=_in(straight, cli_env))
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen(
        _fit_cmd(*args),
        cwd=killed,
        env=_in(killed, cli_env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for(lambda: _step_of(killed) >= 25, proc)
    proc.send_signal(signal.SIGKILL)  # no chance to save anything
    proc.communicate()
    interrupted_at = _step_of(killed)
    assert 25 <= interrupted_at < 120 and interrupted_at % 60 != 0  # mid-epoch

    resumed = run_cli(
        ["fit", "--config", EXPERIMENT, *args, "--ckpt_path", "last"],
        cwd=killed,
        env=_in(killed, cli_env),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming run" in resumed.stderr

    a, b = _load(_last(straight)), _load(_last(killed))
    assert a["global_step"] == b["global_step"] == 120
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key  # bit for bit, metrics included
    assert a["lr_schedulers"] == b["lr_schedulers"]
    best = [
        [state["best_model_score"] for key, state in c["callbacks"].items() if "val/acc1" in key]
        for c in (a, b)
    ]
    assert best[0] == best[1] and len(best[0]) == 1

    # One W&B run, continued under its id (the killed process may not have flushed its
    # run file, so the id is read from the folder names), with a step axis that goes on
    # from where the checkpoint was.
    folders = sorted((killed / "wandb").glob("offline-run-*"))
    run_id = _last(killed).parents[1].name
    assert len(folders) == 2 and all(f.name.endswith(f"-{run_id}") for f in folders)
    steps = read_wandb_run(folders[1]).metric("trainer/global_step")
    assert steps == sorted(steps) and steps[0] >= interrupted_at
    # metrics.json goes on too: both epochs, each with the numbers of the unbroken run.
    rows = [json.loads(next(r.glob("cnn_bench/*/metrics.json")).read_text())["history"]
            for r in (straight, killed)]  # fmt: skip
    assert [r["epoch"] for r in rows[1]] == [r["epoch"] for r in rows[0]] == [0, 1]
    for key in ("step", "val/acc1", "val/loss", "train/loss"):
        assert [r[key] for r in rows[1]] == pytest.approx([r[key] for r in rows[0]]), key


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(
    tmp_path: Path, cli_env: dict, every_25_steps: str
) -> None:
    proc = subprocess.Popen(
        _fit_cmd(
            "--config",
            every_25_steps,
            "--trainer.max_epochs",
            "50",
        ),
        cwd=tmp_path,
        env=cli_env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for(lambda: _step_of(tmp_path) >= 25, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    (line,) = [x for x in stderr.splitlines() if "stopped by SIGTERM" in x]
    step = int(line.split("at step ")[1].split(";")[0])
    assert _load(_last(tmp_path))["global_step"] == step > 25
    assert "--ckpt_path last" in line


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """A process that fails in the middle of writing last.ckpt, as on a full disk: past a
    file size limit (RLIMIT_FSIZE) of 100 kB the write fails and the process dies."""
    path = tmp_path / "last.ckpt"
    script = """
import resource, sys, torch
from cnn_bench.checkpoint import AtomicCheckpointIO

io = AtomicCheckpointIO()
io.save_checkpoint({"weights": torch.arange(10_000.0), "step": 1}, sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
io.save_checkpoint({"weights": torch.zeros(100_000), "step": 2}, sys.argv[1])
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True
    )
    assert result.returncode == 1 and "File too large" in result.stderr, result.stderr
    good = torch.load(path, weights_only=False)
    assert good["step"] == 1 and torch.equal(good["weights"], torch.arange(10_000.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_checkpoints_on_another_filesystem_go_through_fsspec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote path (fsspec's in-memory filesystem, standing in for s3://) is written
    there, not to a local folder named after it, and read back weights-only."""
    from cnn_bench.checkpoint import AtomicCheckpointIO, CheckpointError

    monkeypatch.chdir(tmp_path)
    memory = fsspec.filesystem("memory")
    url = "memory://cnn_bench_test/checkpoints/last.ckpt"
    checkpoint = {"state_dict": {"w": torch.arange(3.0)}, "pytorch-lightning_version": "2.6"}
    try:
        AtomicCheckpointIO().save_checkpoint({**checkpoint, "global_step": 7}, url)
        assert memory.isfile("/cnn_bench_test/checkpoints/last.ckpt")
        assert list(tmp_path.iterdir()) == []  # nothing written to a local "memory:" folder
        back = AtomicCheckpointIO().load_checkpoint(url)
        assert back["global_step"] == 7 and torch.equal(back["state_dict"]["w"], torch.arange(3.0))
        with pytest.raises(CheckpointError, match="not found"):
            AtomicCheckpointIO().load_checkpoint("memory://cnn_bench_test/none.ckpt")
        memory.pipe("/cnn_bench_test/evil.ckpt", pickle.dumps(print))
        with pytest.raises(CheckpointError, match="refused|not a checkpoint"):
            AtomicCheckpointIO().load_checkpoint("memory://cnn_bench_test/evil.ckpt")
    finally:
        memory.rm("/cnn_bench_test", recursive=True)


def test_non_finite_loss_stops_with_one_line(tmp_path: Path, cli_env: dict) -> None:
    result = run_cli(
        [
            "fit",
            "--config",
            EXPERIMENT,
            *SHORT,
            "--model.optimizer.init_args.lr",
            "1e12",
            "--model.lr_scheduler",
            "null",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    assert result.returncode != 0
    errors = [x for x in result.stderr.splitlines() if x.startswith("cnn-bench: error:")]
    assert len(errors) == 1 and re.search(r"train/loss is (nan|inf) at step \d+", errors[0]), (
        result.stderr[-2000:]
    )
    assert "Traceback" not in result.stderr


def test_same_seed_same_run_other_seed_other_run(tmp_path: Path, cli_env: dict) -> None:
    finals = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        (tmp_path / name).mkdir()
        r = run_cli(
            [
                "fit",
                "--config",
                EXPERIMENT,
                "--seed_everything",
                seed,
                "--trainer.max_epochs",
                "1",
                "--trainer.limit_train_batches",
                "30",
                "--trainer.enable_progress_bar",
                "false",
            ],
            cwd=tmp_path / name,
            env=_in(tmp_path / name, cli_env),
        )
        assert r.returncode == 0, r.stderr[-3000:]
        finals[name] = _load(_last(tmp_path / name))["state_dict"]
        (run_dir,) = (tmp_path / name / "wandb").glob("offline-run-*")
        assert read_wandb_run(run_dir).config["cli"]["seed_everything"] == int(seed)
    assert all(torch.equal(v, finals["b"][k]) for k, v in finals["a"].items())
    assert not torch.equal(
        finals["a"]["model.features.0.weight"], finals["c"]["model.features.0.weight"]
    )


@pytest.mark.slow
def test_ddp_on_two_processes_matches_one_process_exactly(tmp_path: Path, cli_env: dict) -> None:
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    fit = run_cli(
        [
            "fit",
            "--config",
            EXPERIMENT,
            *ddp,
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "20",
            "--data.val_size",
            "999",
            "--trainer.enable_progress_bar",
            "false",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    # Only rank zero logged and wrote checkpoints.
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1
    ckpt = _last(tmp_path)
    assert len(list(tmp_path.glob("cnn_bench/*"))) == 1

    summaries = []
    for devices in (ddp, ["--trainer.devices", "1", "--trainer.accelerator", "cpu"]):
        # 999 test images: not divisible by 2, so padding would count one image twice.
        r = run_cli(
            [
                "test",
                "--config",
                EXPERIMENT,
                *devices,
                "--ckpt_path",
                str(ckpt),
                "--data.test_size",
                "999",
                "--trainer.enable_progress_bar",
                "false",
            ],
            cwd=tmp_path,
            env=cli_env,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        newest = sorted((tmp_path / "wandb").glob("offline-run-*"))[-1]
        summaries.append(read_wandb_run(newest).summary)
    two, one = summaries
    assert two["test/acc1"] == one["test/acc1"] and two["test/acc5"] == one["test/acc5"]
    assert round(one["test/acc1"] * 999) == pytest.approx(one["test/acc1"] * 999, abs=1e-3)
    assert two["test/loss"] == pytest.approx(one["test/loss"], rel=1e-6)
