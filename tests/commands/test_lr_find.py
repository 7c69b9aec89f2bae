"""`cnn-bench lr-find`: Lightning's learning-rate range test on a configured run."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from tests.conftest import REPO, clean_env, run_cli

LENET = str(REPO / "configs/experiment/lenet5_cifar10.yaml")


def test_lr_find_sweeps_the_rates_and_suggests_one(tmp_path: Path, cifar_root: Path) -> None:
    out = tmp_path / "search"
    done = run_cli(
        [
            "lr-find",
            "--config",
            LENET,
            "--num_training",
            "30",
            "--min_lr",
            "1e-5",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env=clean_env(tmp_path, CNN_BENCH_DATA=str(cifar_root)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((out / "lr_find.csv").open()))
    assert len(rows) == 30
    rates = [float(r["lr"]) for r in rows]
    # exponential from min_lr to max_lr: a constant ratio between steps (Lightning's
    # schedule goes from the first rate straight to the third of its geometric series)
    assert rates[0] == pytest.approx(1e-5) and rates[-1] == pytest.approx(1.0)
    ratios = {round(b / a, 6) for a, b in zip(rates[1:], rates[2:], strict=False)}
    assert ratios == {round(1e5 ** (1 / 30), 6)}
    # the raw loss of an untrained 10-class network starts near ln 10
    assert float(rows[0]["loss"]) == pytest.approx(math.log(10), abs=0.25)
    assert (out / "lr_find.png").stat().st_size > 10_000
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("cnn-bench lr-find:")]
    suggested = float(re.search(r"suggested learning rate (\S+)", line).group(1))
    assert 1e-5 <= suggested <= 1.0
    assert f"--model.optimizer.lr {suggested:.3g}" in line
    # a search is not a run: no W&B run, no checkpoints left behind
    assert not list(tmp_path.rglob("offline-run-*")) and not list(tmp_path.rglob("*.ckpt"))


def test_lr_find_refuses_a_bad_range_in_one_line(tmp_path: Path) -> None:
    done = run_cli(["lr-find", "--config", LENET, "--min_lr", "0"], cwd=tmp_path)
    assert done.returncode == 2
    assert "need 0 < --min_lr < --max_lr" in done.stderr and "Traceback" not in done.stderr
