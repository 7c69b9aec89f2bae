"""The CLI as Lightning users expect it: help that lists every command, the run folder
under --trainer.default_root_dir, --ckpt_path last that resumes only this experiment, a
summary line at the end of fit, and no warnings the project causes."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from cnn_bench.cli import RUNS, TOOLS
from tests.conftest import run_cli
from tests.wandb_files import read_wandb_run

REPO = Path(__file__).resolve().parents[1]
LENET = REPO / "configs/experiment/lenet5_cifar10.yaml"
TINY = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "3",
    "--trainer.limit_val_batches",
    "2",
]


def test_help_and_no_command_list_every_command(tmp_path: Path) -> None:
    shown = run_cli(["--help"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    bare = run_cli([], cwd=tmp_path)
    assert bare.returncode == 2 and "Traceback" not in bare.stderr
    for name in [*RUNS, *TOOLS]:
        assert f"\n  {name} " in shown.stdout, name
        assert f"\n  {name} " in bare.stderr, name


def _new_user_env(tmp_path: Path, cifar_root: Path) -> dict[str, str]:
    """No WANDB_* at all (so no WANDB_DIR): where files go is the CLI's decision."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), CNN_BENCH_DATA=str(cifar_root))
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def test_default_root_dir_holds_the_run_and_fit_ends_with_a_summary(
    tmp_path: Path, cifar_root: Path
) -> None:
    env = _new_user_env(tmp_path, cifar_root)
    fit = run_cli(
        ["fit", "--config", str(LENET), *TINY, "--trainer.default_root_dir", "elsewhere"],
        cwd=tmp_path,
        env=env,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    root = tmp_path / "elsewhere"
    (run,) = (root / "cnn_bench").iterdir()
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (root / "wandb" / "latest-run").exists()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "wandb").exists()
    # W&B's staging and cache folders are inside the run's root, not in the home directory.
    assert not (tmp_path / "home" / ".local" / "share" / "wandb").exists()
    assert not (tmp_path / "home" / ".cache" / "wandb" / "artifacts").exists()
    # The experiment's name (the --config file's stem) is part of the record.
    assert yaml.safe_load((run / "config.yaml").read_text())["experiment"] == "lenet5_cifar10"

    summary = [line for line in fit.stderr.splitlines() if "fit done" in line]
    assert len(summary) == 1, fit.stderr[-3000:]
    assert "best val/acc1" in summary[0] and "at epoch 0" in summary[0]
    assert str(run / "checkpoints" / "last.ckpt") in summary[0] and "3 steps" in summary[0]
    for noise in ("anonymous setting", "LeafSpec", "Tip:", "git root"):
        assert noise not in fit.stderr, noise


def test_test_runs_are_told_apart_from_the_training_run(tmp_path: Path, cli_env: dict) -> None:
    fit = run_cli(["fit", "--config", str(LENET), *TINY], cwd=tmp_path, env=cli_env)
    assert fit.returncode == 0, fit.stderr[-3000:]
    (ckpt,) = tmp_path.glob("cnn_bench/*/checkpoints/last.ckpt")
    test = run_cli(
        [
            "test",
            "--config",
            str(LENET),
            "--ckpt_path",
            str(ckpt),
            "--trainer.limit_test_batches",
            "2",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    assert test.returncode == 0, test.stderr[-3000:]
    fit_run, test_run = (
        read_wandb_run(p) for p in sorted((tmp_path / "wandb").glob("offline-run-*"))
    )
    assert fit_run.run_id != test_run.run_id
    assert (
        yaml.safe_load((tmp_path / "cnn_bench" / test_run.run_id / "config.yaml").read_text())[
            "trainer"
        ]["logger"]["init_args"]["job_type"]
        == "test"
    )
    assert (
        yaml.safe_load((tmp_path / "cnn_bench" / fit_run.run_id / "config.yaml").read_text())[
            "trainer"
        ]["logger"]["init_args"]["name"]
        == "lenet5-cifar10-s0"
    )
    names = [
        yaml.safe_load(p.read_text())["trainer"]["logger"]["init_args"]["name"]
        for p in tmp_path.glob("cnn_bench/*/config.yaml")
    ]
    assert sorted(names) == ["lenet5-cifar10-s0", "lenet5-cifar10-s0-test"]


def test_ckpt_path_last_resumes_only_this_experiment(tmp_path: Path, cli_env: dict) -> None:
    def fit(*args: str):
        done = run_cli(["fit", "--config", str(LENET), *TINY, *args], cwd=tmp_path, env=cli_env)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    fit("--experiment", "mine")
    (mine,) = (tmp_path / "cnn_bench").iterdir()
    # Same network and data, another experiment: a new run, and "mine" is left as it was.
    before = (mine / "config.yaml").read_text()
    other = fit("--experiment", "other", "--ckpt_path", "last")
    assert "starting a new run" in other.stderr
    assert (mine / "config.yaml").read_text() == before
    assert len(list((tmp_path / "cnn_bench").iterdir())) == 2
    # A damaged run folder is skipped with a warning; the experiment's own run resumes.
    damaged = next(p for p in (tmp_path / "cnn_bench").iterdir() if p != mine)
    (damaged / "config.yaml").write_text("model: [unclosed\n")
    again = fit("--experiment", "mine", "--ckpt_path", "last")
    assert f"resuming run {mine.name}" in again.stderr, again.stderr[-3000:]
    assert f"warning: skipping {damaged / 'config.yaml'}" in again.stderr
    assert "Traceback" not in again.stderr
    assert len(list((tmp_path / "cnn_bench").iterdir())) == 2


def test_gpu_check_without_a_gpu_says_so_in_one_line(tmp_path: Path) -> None:
    done = run_cli(["gpu-check", "--out", str(tmp_path / "out")], cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert (
        done.stderr.strip().splitlines()
        == [
            done.stderr.strip(),
        ]
        and "no CUDA device here" in done.stderr
    )
    assert not (tmp_path / "out").exists()
