"""``cnn-bench study``: a tiny grid (2 points x 2 seeds, a few steps of logistic
regression on CIFAR-10) run for real, killed between runs and started again, then its
aggregation, files and figures checked; and every committed study config validated."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pytest
import torch
import yaml

from cnn_bench import studies
from cnn_bench.cli import cli
from cnn_bench.commands.study import base_words
from tests.conftest import clean_env

ROOT = Path(__file__).resolve().parents[2]
LOGREG = ROOT / "configs" / "experiment" / "logreg_cifar10.yaml"
STUDY = f"""
description: Two learning rates of logistic regression, a few steps each.
configs: [{LOGREG}]
args:
  data.batch_size: 32
  data.eval_batch_size: 100
  trainer.limit_train_batches: 3
  trainer.limit_val_batches: 1
  trainer.limit_test_batches: 2
  trainer.enable_progress_bar: true
grid:
  model.optimizer.init_args.lr: [0.001, 0.1]
seeds: 2
budgets:
  cpu: {{description: two epochs of three batches, args: {{trainer.max_epochs: 2}}}}
  full: {{args: {{trainer.max_epochs: 20}}}}
plots:
  - file: error_vs_lr.png
    x: model.optimizer.init_args.lr
    y: [test/error, test_last/error, train/error]
    logx: true
    reference: [{{x: 0.01, label: a reference line}}]
  - {{file: loss.png, kind: history, y: [train/loss]}}
"""
T_975_1 = 12.706204736  # Student's t quantile, 1 degree of freedom (tables)


def _study(args: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cnn_bench.cli", "study", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, cifar_root) -> dict:
    """The tiny study killed during its third run, then started again to the end."""
    work = tmp_path_factory.mktemp("study")
    (work / "tiny.yaml").write_text(STUDY)
    args = ["tiny.yaml", "--out", "out", "--runs_dir", "runs"]
    env = clean_env(work, CNN_BENCH_DATA=str(cifar_root))  # no W&B credentials
    first = _study(args, work, env=env, start_new_session=True)
    lines = []
    for line in first.stdout:
        lines.append(line)
        if line.startswith("cnn-bench study: run 3/4"):
            time.sleep(3)  # inside the third fit
            os.killpg(first.pid, signal.SIGKILL)
            break
    first.wait(timeout=60)
    assert any("run 3/4" in line for line in lines), "".join(lines)[-3000:]
    done = sorted((work / "runs" / "studies" / "tiny").glob("*.json"))
    assert len(done) == 2, "two runs finished before the kill"
    before = {p.name: p.stat().st_mtime_ns for p in done}
    records = {work / json.loads(p.read_text())["run_dir"] for p in done}
    metrics_before = {r: (Path(r) / "metrics.json").stat().st_mtime_ns for r in records}
    second = _study(args, work, env=env)
    output, _ = second.communicate(timeout=900)
    assert second.returncode == 0, output[-3000:]
    return {
        "work": work,
        "output": output,
        "before": before,
        "metrics_before": metrics_before,
        "study": studies.load(str(work / "tiny.yaml")),
    }


def test_a_restarted_study_skips_finished_runs_and_completes_the_rest(tiny):
    out = tiny["output"]
    assert out.count("done before, skipped") == 2
    assert "run 1/4" in out and "run 4/4 (lr=0.1, seed 1) fit: cnn-bench fit" in out
    done = {p.name: p.stat().st_mtime_ns for p in (tiny["work"] / "runs/studies/tiny").glob("*")}
    assert len(done) == 4
    for name, mtime in tiny["before"].items():
        assert done[name] == mtime, "a finished run's record was rewritten"
    for run_dir, mtime in tiny["metrics_before"].items():
        assert (Path(run_dir) / "metrics.json").stat().st_mtime_ns == mtime, "retrained"


def test_every_run_has_best_and_last_test_and_training_metrics(tiny):
    rows = list(csv.DictReader((tiny["work"] / "out" / "results.csv").open()))
    assert len(rows) == 4
    assert {(r["model.optimizer.init_args.lr"], r["seed"]) for r in rows} == {
        ("0.001", "0"),
        ("0.001", "1"),
        ("0.1", "0"),
        ("0.1", "1"),
    }
    for row in rows:
        for name in ("test/acc1", "test_last/acc1", "test/loss", "test_last/loss", "train/loss"):
            assert 0 <= float(row[name]) < 100, name
        assert float(row["test/error"]) == pytest.approx(1 - float(row["test/acc1"]))
        assert int(row["epochs"]) == 2 and int(row["params"]) == 3072 * 10 + 10
        assert len({r["run_id"] for r in rows}) == 4
    # The two seeds of a point are different runs; the two points differ in lr.
    assert rows[0]["test_last/loss"] != rows[1]["test_last/loss"]


def test_summary_is_the_mean_and_t_interval_over_seeds(tiny):
    rows = list(csv.DictReader((tiny["work"] / "out" / "results.csv").open()))
    summary = json.loads((tiny["work"] / "out" / "summary.json").read_text())
    assert [p["point"] for p in summary["points"]] == ["lr=0.001", "lr=0.1"]
    for point in summary["points"]:
        for name in ("test/error", "test_last/loss", "train/loss"):
            values = [float(r[name]) for r in rows if r["point"] == point["point"]]
            mean = sum(values) / 2
            half = T_975_1 * abs(values[0] - values[1]) / 2  # t * (abs(a - b) / sqrt 2) / sqrt 2
            stats = point["metrics"][name]
            assert stats["n"] == 2
            assert stats["mean"] == pytest.approx(mean, abs=1e-9)
            assert stats["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-5)
    assert summary["machine"]["cores"] == os.cpu_count()
    assert summary["budget"] == "cpu" and summary["wall_seconds_all_runs"] > 0


def test_readme_and_figures_are_written(tiny):
    out = tiny["work"] / "out"
    readme = (out / "README.md").read_text()
    assert "cnn-bench study tiny.yaml --out out --runs_dir runs" in readme
    assert "two epochs of three batches" in readme and "load average" in readme
    assert "| lr=0.001 |" in readme and "| lr=0.1 |" in readme
    for png in ("error_vs_lr.png", "loss.png"):
        assert f"]({png})" in readme
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(out / png)
        assert image.shape[0] > 300 and image.shape[1] > 500
        assert image[..., :3].std() > 0.05, "an empty figure"


def test_sweep_prints_the_equivalent_wandb_grid(tmp_path):
    (tmp_path / "tiny.yaml").write_text(STUDY)
    result = subprocess.run(
        [sys.executable, "-m", "cnn_bench.cli", "study", "tiny.yaml", "--sweep"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    sweep = yaml.safe_load(result.stdout)
    assert sweep["method"] == "grid"
    assert sweep["parameters"]["model.optimizer.init_args.lr"]["values"] == [0.001, 0.1]
    assert sweep["parameters"]["seed_everything"]["values"] == [0, 1]
    assert "--trainer.max_epochs=2" in sweep["command"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_study"], "no study 'no_such_study'; known: "),
        (["weight_decay_vs_l2", "--budget", "huge"], "has no budget 'huge'"),
        (["weight_decay_vs_l2", "--seeds", "0"], "--seeds must be at least 1, not 0"),
    ],
)
def test_a_bad_study_or_budget_is_one_line(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "cnn_bench.cli", "study", *args], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr


@pytest.mark.parametrize("name", studies.available())
def test_each_committed_study_validates_and_trains_a_step(name, tmp_path, cli_env):
    # {ckpt:POINT} gets the untrained weights of POINT's network, saved as its last.ckpt.
    sources: dict[str, dict[tuple[str, int], Path]] = {}
    for budget in ("full", "cpu"):
        study = studies.load(name, budget)
        assert study.runs and study.plots
        for run in study.runs[:: len(study.seeds)]:  # every point parses and builds
            found = sources.setdefault(budget, {})
            built = cli(base_words(study, studies.resolve_checkpoints(run, found)), run=False)
            folder = tmp_path / budget / run.point
            (folder / "checkpoints").mkdir(parents=True)
            torch.save(built.model.model.state_dict(), folder / "checkpoints" / "last.ckpt")
            found[run.point, run.seed] = folder
    study = studies.load(name)
    run = studies.resolve_checkpoints(study.runs[-1], sources["cpu"])
    result = subprocess.run(
        [sys.executable, "-m", "cnn_bench.cli", "fit", *base_words(study, run)]
        + ["--trainer.fast_dev_run", "1", "--trainer.logger.init_args.save_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=cli_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_ensemble_step_tests_the_first_k_seeds_with_each_view_set(tmp_path, cifar_root):
    """Two seeds, two view sets: the seeds' own accuracies without views are their
    tests of last.ckpt, k = 1 is the first seed, and a second start tests nothing again."""
    spec = yaml.safe_load(STUDY)
    spec.pop("grid")
    spec["plots"] = [spec["plots"][1]]
    spec["ensemble"] = {
        "tta": ["none", "flip"],
        "plot": {"file": "ensembles.png", "title": "two seeds"},
    }
    (tmp_path / "ens.yaml").write_text(yaml.safe_dump(spec))
    args = ["ens.yaml", "--out", "out", "--runs_dir", "runs"]
    env = clean_env(tmp_path, CNN_BENCH_DATA=str(cifar_root))
    output, _ = _study(args, tmp_path, env=env).communicate(timeout=900)
    assert output.count("ensemble of 2 seeds of base") == 2, output[-3000:]
    out = tmp_path / "out"
    rows = list(csv.DictReader((out / "ensembles.csv").open()))
    assert [(r["tta"], r["k"]) for r in rows] == [("none", "1"), ("none", "2")] + [
        ("flip", "1"),
        ("flip", "2"),
    ]
    runs = list(csv.DictReader((out / "results.csv").open()))
    own = [float(r["test_last/acc1"]) for r in runs]
    plain = [r for r in rows if r["tta"] == "none"]
    assert [float(r["member_acc1"]) for r in plain] == pytest.approx(own, abs=1e-6)
    assert float(plain[0]["single_mean_acc1"]) == pytest.approx(sum(own) / 2, abs=1e-6)
    assert float(plain[0]["acc1"]) == pytest.approx(own[0], abs=1e-6)
    readme = (out / "README.md").read_text()
    assert "## Ensembles" in readme and "](ensembles.png)" in readme and "| mean single |" in readme
    assert matplotlib.image.imread(out / "ensembles.png")[..., :3].std() > 0.05
    again, _ = _study(args, tmp_path, env=env).communicate(timeout=900)
    assert "ensemble of 2 seeds" not in again and "done before, skipped" in again


def test_a_bad_ensemble_section_is_one_line(tmp_path):
    spec = yaml.safe_load(STUDY)
    spec["ensemble"] = {"tta": ["mirror"]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    result = subprocess.run(
        [sys.executable, "-m", "cnn_bench.cli", "study", "bad.yaml", "--dry_run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "ensemble.tta must be a list of" in result.stderr and "Traceback" not in result.stderr
