"""`cnn-bench report` over damaged run folders: each is skipped with one line, the rest count."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli

GOOD = {
    "arch": "lenet5",
    "dataset": "cifar10",
    "seed": 0,
    "epochs": 1,
    "history": [{"epoch": 0, "step": 10, "val/acc1": 0.3, "val/loss": 2.0}],
    "test": {"test/acc1": 0.31, "test/acc5": 0.8},
}


def test_report_skips_damaged_runs_with_one_line_each(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    damaged = {
        "truncated": json.dumps(GOOD)[:40],
        "empty": "",
        "a_list": "[1, 2]",
        "binary": "\udcff",
    }
    for name, text in {"good": json.dumps(GOOD), **damaged}.items():
        (runs / name).mkdir(parents=True)
        data = text.encode("utf-8", "surrogateescape")
        (runs / name / "metrics.json").write_bytes(data)
    (runs / "bad_config").mkdir()
    (runs / "bad_config" / "metrics.json").write_text(json.dumps(GOOD))
    (runs / "bad_config" / "config.yaml").write_text("model: [unclosed\n")

    done = run_cli(["report", str(runs)], cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning: skipping" in line]
    assert sorted(Path(w.split("skipping ")[1].split(":")[0]).name for w in warnings) == sorted(
        [*damaged, "bad_config"]
    )
    results = json.loads((runs / "report" / "results.json").read_text())
    assert [r["runs"] for r in results] == [[str(runs / "good")]]


def test_a_test_run_joins_the_run_whose_checkpoint_it_tested(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fit = runs / "cnn_bench" / "fit1"
    (fit / "checkpoints").mkdir(parents=True)
    (fit / "metrics.json").write_text(json.dumps(GOOD))
    tested = {
        **GOOD,
        "epochs": 0,
        "history": [],
        "test": {"test/acc1": 0.5, "test/tta_acc1": 0.33},
        "checkpoint": str(fit / "checkpoints" / "last.ckpt"),
    }
    (runs / "cnn_bench" / "test1").mkdir()
    (runs / "cnn_bench" / "test1" / "metrics.json").write_text(json.dumps(tested))
    done = run_cli(["report", str(runs)], cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads((runs / "report" / "results.json").read_text())
    assert row["runs"] == [str(fit)]
    assert row["test/acc1"]["mean"] == 0.31  # the run's own test result is kept
    assert row["test/tta_acc1"]["mean"] == 0.33  # the later test adds what it measured
