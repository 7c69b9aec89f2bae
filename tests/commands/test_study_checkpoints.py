"""``{ckpt:POINT}``: a study run that starts from an earlier run's ``last.ckpt``."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnn_bench import studies
from cnn_bench.studies import StudyError
from tests.conftest import clean_env

ROOT = Path(__file__).resolve().parents[2]
LOGREG = ROOT / "configs" / "experiment" / "logreg_cifar10.yaml"


def _write(tmp_path: Path, first_lr: float = 0.1, order: tuple[str, str] = ("first", "second")):
    variants = {
        "first": f"{{model.optimizer.init_args.lr: {first_lr}}}",
        # learning rate 0: the second run's final weights are the ones it started from
        "second": '{model.optimizer.init_args.lr: 0.0, model.pretrained: "{ckpt:first}"}',
    }
    lines = "\n".join(f"  {name}: {variants[name]}" for name in order)
    path = tmp_path / "chain.yaml"
    path.write_text(
        f"""
configs: [{LOGREG}]
args:
  model.lr_scheduler: null
  data.batch_size: 32
  data.test_size: 100
  trainer.limit_train_batches: 3
  trainer.limit_val_batches: 1
  trainer.max_epochs: 1
variants:
{lines}
seeds: 1
test_last: false
budgets: {{cpu: {{}}}}
plots: [{{file: acc.png, x: variant, y: test/acc1}}]
"""
    )
    return path


def test_a_checkpoint_of_a_later_or_unknown_point_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match=r"\{ckpt:first\} names no earlier point"):
        studies.load(str(_write(tmp_path, order=("second", "first"))))


def test_the_follower_is_a_new_run_when_its_source_changes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = studies.load(str(_write(tmp_path / "a", 0.1)))
    b = studies.load(str(_write(tmp_path / "b", 0.2)))
    assert a.runs[1].args == b.runs[1].args  # the same words: only the source differs
    assert a.runs[1].run_id != b.runs[1].run_id


def test_resolving_needs_the_finished_source(tmp_path: Path) -> None:
    run = studies.load(str(_write(tmp_path))).runs[1]
    with pytest.raises(StudyError, match="starts from the last.ckpt of first seed 0"):
        studies.resolve_checkpoints(run, {})
    (tmp_path / "src" / "checkpoints").mkdir(parents=True)
    with pytest.raises(StudyError, match="last.ckpt is missing"):
        studies.resolve_checkpoints(run, {("first", 0): tmp_path / "src"})
    ckpt = tmp_path / "src" / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"")
    resolved = studies.resolve_checkpoints(run, {("first", 0): tmp_path / "src"})
    assert resolved.args["model.pretrained"] == str(ckpt)
    assert run.args["model.pretrained"] == "{ckpt:first}"  # the study's run is unchanged


def test_a_study_run_starts_from_the_earlier_runs_weights(tmp_path: Path, cifar_root) -> None:
    _write(tmp_path)
    env = clean_env(tmp_path, CNN_BENCH_DATA=str(cifar_root))
    done = subprocess.run(
        [sys.executable, "-m", "cnn_bench.cli", "study", "chain.yaml", "--runs_dir", "runs"]
        + ["--out", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    rows = {r["point"]: r for r in csv.DictReader((tmp_path / "out" / "results.csv").open())}
    first, second = (
        tmp_path / rows[point]["run_dir"] / "checkpoints" / "last.ckpt"
        for point in ("first", "second")
    )
    weights = [torch.load(p, weights_only=True)["state_dict"] for p in (first, second)]
    start = {k for k in weights[0] if k.startswith("model.")}
    assert start and all(torch.equal(weights[0][k], weights[1][k]) for k in start)
    source = f"runs/cnn_bench/{first.parents[1].name}/checkpoints/last.ckpt"
    assert f"--model.pretrained={source}" in done.stdout


def test_named_x_values_keep_the_studys_order() -> None:
    from cnn_bench.commands.study_report import x_names

    summary = [
        {"point": f"{v},arch={a}", "model.arch": a, "metrics": {}}
        for v in ("all", "head")
        for a in ("resnet8", "resnet14", "resnet20")
    ]
    assert x_names(summary, "model.arch") == ["resnet8", "resnet14", "resnet20"]
    assert x_names(summary, "params") == []  # a number is placed by its value
