"""``select:`` in a study: the point of each group chosen on validation, on hand-made rows;
and the learning rate of each epoch in the run record, which schedule studies plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cnn_bench import studies
from cnn_bench.commands import study_report
from cnn_bench.studies import StudyError
from tests.conftest import REPO, run_cli

LOGREG = REPO / "configs" / "experiment" / "logreg_cifar10.yaml"
LR = "model.optimizer.init_args.lr"
STUDY = f"""
configs: [{LOGREG}]
variants:
  sgd: {{model.optimizer.class_path: torch.optim.SGD}}
  adam: {{model.optimizer.class_path: torch.optim.Adam}}
grid:
  {LR}: [0.001, 0.01, 0.1]
  data.batch_size: [32, 64]
seeds: 2
budgets: {{cpu: {{}}}}
plots: [{{file: chosen.png, kind: history, y: [train/loss], selected: true}}]
"""


def _load(tmp_path: Path, select: str, study: str = STUDY) -> studies.Study:
    path = tmp_path / "s.yaml"
    path.write_text(study + select)
    return studies.load(str(path))


def _rows(study: studies.Study, score) -> list[dict]:
    """Two seeds per point; val/acc1 = score(variant, lr, batch) -/+ 0.01 over the seeds."""
    rows = []
    for run in study.runs:
        v = run.values
        acc = score(v["variant"], v[LR], v["data.batch_size"]) + (0.01 if run.seed else -0.01)
        rows.append(
            {"point": run.point, **v, "seed": run.seed, "val/acc1": acc, "test/acc1": acc / 2}
        )
    return rows


def test_select_picks_the_best_mean_per_group(tmp_path):
    study = _load(tmp_path, f"select: {{over: {LR}, by: variant, metric: val/acc1}}\n")
    # SGD is best at lr 0.1 with batch 64; Adam at lr 0.001 with batch 32.
    best = {("sgd", 0.1, 64): 0.9, ("adam", 0.001, 32): 0.8}
    rows = _rows(study, lambda var, lr, bs: best.get((var, lr, bs), 0.5 + lr))
    chosen = study_report.select(study, study_report.aggregate(study, rows))
    assert [(c["variant"], c[LR], c["data.batch_size"]) for c in chosen] == [
        ("sgd", 0.1, 64),
        ("adam", 0.001, 32),
    ]
    assert chosen[0]["value"] == pytest.approx(0.9)  # the mean over the two seeds
    assert chosen[1]["metrics"]["test/acc1"]["mean"] == pytest.approx(0.4)
    assert len(chosen[0]["candidates"]) == 6  # every point of the group, batch sizes too


def test_select_by_default_groups_by_every_other_key_and_min_takes_the_lowest(tmp_path):
    study = _load(tmp_path, f"select: {{over: {LR}, metric: val/acc1, mode: min}}\n")
    assert study.select["by"] == ["variant", "data.batch_size"]
    rows = _rows(study, lambda var, lr, bs: lr)
    summary = study_report.aggregate(study, rows)
    chosen = study_report.select(study, summary)
    assert len(chosen) == 4 and {c[LR] for c in chosen} == {0.001}
    assert all(len(c["candidates"]) == 3 for c in chosen)


def test_the_report_tables_the_choice_and_plots_only_the_chosen(tmp_path):
    study = _load(tmp_path, f"select: {{over: {LR}, by: variant, metric: val/acc1}}\n")
    rows = _rows(study, lambda var, lr, bs: lr if var == "sgd" else 1 - lr)
    for row in rows:  # a short curve for the history plot
        row["history"] = [{"epoch": e, "train/loss": 2.0 - e} for e in range(3)]
    info = {
        "command": "cnn-bench study s.yaml",
        "machine": {"cpu": "x", "cores": 2, "load_start": [0, 0, 0], "load_end": [0, 0, 0],
                    "torch": "2"},
        "wall_seconds_all_runs": 1.0,
        "wall_seconds_this_invocation": 1.0,
    }  # fmt: skip
    study_report.write(study, rows, info, tmp_path / "out")
    readme = (tmp_path / "out" / "README.md").read_text()
    assert f"Chosen on validation: `{LR}`, per `variant`" in readme
    assert "| sgd | sgd,lr=0.1,batch_size=32 | 10.00 ± 12.71 | 5.00 ± 6.35 |" in readme
    assert "| adam | adam,lr=0.001,batch_size=32 | 99.90 ± 12.71 | 49.95 ± 6.35 |" in readme
    assert "sgd,lr=0.001,batch_size=64: 0.10; sgd,lr=0.01,batch_size=32: 1.00;" in readme
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [p["point"] for p in summary["selected"]["points"]] == [
        "sgd,lr=0.1,batch_size=32",
        "adam,lr=0.001,batch_size=32",
    ]
    assert len(summary["points"]) == 12  # the whole grid stays in the summary


@pytest.mark.parametrize(
    ("select", "message"),
    [
        ("select: {over: model.lr, metric: val/acc1}", "'model.lr' is not a grid key"),
        (f"select: {{over: {LR}, metric: val/acc1, mode: best}}", "mode is max or min"),
        (f"select: {{over: {LR}, by: {LR}, metric: val/acc1}}", "must be different grid keys"),
        (f"select: {{over: {LR}}}", "select needs over:"),
        (f"select: {{over: {LR}, metric: val/acc1, pick: 1}}", "unknown key(s) pick"),
        ("select: [1]", "select must be a mapping"),
        ("", "selected: true needs a select:"),
    ],
)
def test_a_bad_select_is_one_line(tmp_path, select, message):
    with pytest.raises(StudyError, match=None) as err:
        _load(tmp_path, select + "\n")
    assert message in str(err.value)
    result = subprocess.run(
        [sys.executable, "-m", "cnn_bench.cli", "study", str(tmp_path / "s.yaml"), "--dry_run"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr


def test_each_epoch_records_the_learning_rate_it_trained_at(tmp_path, cli_env):
    """StepLR halving the rate each epoch: the record holds 0.1, 0.05, 0.025."""
    result = run_cli(
        ["fit", "--config", str(LOGREG), "--trainer.max_epochs", "3"]
        + ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
        + ["--model.optimizer.init_args.lr", "0.1", "--model.scheduler_interval", "epoch"]
        + ["--model.lr_scheduler", "torch.optim.lr_scheduler.StepLR"]
        + ["--model.lr_scheduler.step_size", "1", "--model.lr_scheduler.gamma", "0.5"]
        + ["--trainer.logger.init_args.save_dir", str(tmp_path)],
        cwd=tmp_path,
        env=cli_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(next(tmp_path.glob("*/*/metrics.json")).read_text())
    lrs = [row["train/lr"] for row in record["history"]]
    assert lrs == pytest.approx([0.1, 0.05, 0.025])


def test_a_variant_grid_replaces_the_study_values_of_a_key(tmp_path):
    study = STUDY.replace(
        "adam: {model.optimizer.class_path: torch.optim.Adam}",
        f"adam: {{model.optimizer.class_path: torch.optim.Adam, grid: {{{LR}: [1.0e-4]}}}}",
    )
    loaded = _load(tmp_path, "select: {over: data.batch_size, metric: val/acc1}\n", study)
    lrs = {(r.values["variant"], r.args[LR]) for r in loaded.runs}
    assert lrs == {("sgd", 0.001), ("sgd", 0.01), ("sgd", 0.1), ("adam", 1.0e-4)}
    assert all("grid" not in r.args for r in loaded.runs)
    bad = study.replace(f"grid: {{{LR}: [1.0e-4]}}", "grid: {model.other: [1]}")
    with pytest.raises(StudyError, match="model.other must be a key of the study's grid"):
        _load(tmp_path, "", bad.replace("selected: true", "selected: false"))


def test_early_stop_is_where_lightnings_early_stopping_would_stop():
    accs = [0.1, 0.3, 0.2, 0.3, 0.25, 0.5, 0.4, 0.4, 0.45, 0.6]  # 0.3 again is no improvement
    history = [{"epoch": e, "val/acc1": a} for e, a in enumerate(accs)]
    found = study_report.early_stop(history, "val/acc1", "max", patience=3)
    assert found == {"epochs": 5, "best_epoch": 1, "best": 0.3, "stopped": True}
    found = study_report.early_stop(history, "val/acc1", "max", patience=4)
    assert found == {"epochs": 10, "best_epoch": 9, "best": 0.6, "stopped": False}
    losses = [{"epoch": e, "val/loss": 1.0 - a} for e, a in enumerate(accs)]
    assert study_report.early_stop(losses, "val/loss", "min", patience=3)["epochs"] == 5


def test_a_bad_early_stopping_is_one_line(tmp_path):
    for spec, message in [
        ("{monitor: val/acc1, patience: 0}", "patience must be a positive integer"),
        ("{monitor: acc, patience: 3}", "monitor must be a metric like val/acc1"),
        ("{monitor: val/acc1, patience: 3, delta: 1}", "unknown key(s) delta"),
    ]:
        with pytest.raises(StudyError) as err:
            _load(tmp_path, f"select: {{over: {LR}, metric: val/acc1}}\nearly_stopping: {spec}\n")
        assert message in str(err.value)
