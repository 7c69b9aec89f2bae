"""A study's extra tests of ``last.ckpt`` (``extra_tests``), extra table columns
(``table``), the activation statistics at initialisation (``layers`` figures, filtered by
``where``): one tiny VGG with batch norm run for real, a few steps."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from cnn_bench import studies
from cnn_bench.studies import StudyError
from tests.conftest import REPO, clean_env

STUDY = f"""
description: A tiny VGG with batch norm, tested three ways.
configs: [{REPO / "configs" / "recipe" / "cifar10_onecycle.yaml"}]
args:
  model.arch: vgg11_bn
  model.arch_kwargs: {{width: 0.0625}}
  data.train_subset: 200
  data.val_size: 100
  data.batch_size: 32
  data.eval_batch_size: 100
  trainer.limit_train_batches: 2
  trainer.limit_val_batches: 1
  trainer.limit_test_batches: 1
  run_summary.activation_stats: 16
grid:
  model.init: [kaiming_normal_fan_in]
extra_tests:
  test_precise_bn: {{bn_test.mode: precise, bn_test.batches: 2}}
table: [test_precise_bn/acc1]
budgets:
  cpu: {{args: {{trainer.max_epochs: 1}}}}
plots:
  - file: std.png
    kind: layers
    y: std
    logy: true
    where: {{model.init: kaiming_normal_fan_in}}
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory, cifar_root) -> dict:
    work = tmp_path_factory.mktemp("extras")
    (work / "tiny.yaml").write_text(STUDY)
    env = clean_env(work, CNN_BENCH_DATA=str(cifar_root))
    result = subprocess.run(
        [sys.executable, "-m", "cnn_bench.cli", "study", "tiny.yaml"]
        + ["--out", "out", "--runs_dir", "runs"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return {"work": work, "output": result.stdout}


def test_an_extra_test_runs_with_its_options_and_reports_under_its_prefix(ran):
    assert "test of last.ckpt (test_precise_bn)" in ran["output"]
    assert "precise batch norm: 8 layers' statistics over 2 batches" in ran["output"]
    (row,) = csv.DictReader((ran["work"] / "out" / "results.csv").open())
    for name in ("test_last/acc1", "test_precise_bn/acc1", "test_precise_bn/error"):
        assert 0 <= float(row[name]) <= 1, name
    assert "layers" not in row, "per-layer records are figures, not columns"
    readme = (ran["work"] / "out" / "README.md").read_text()
    assert "| test_precise_bn/acc1 |" in readme


def test_the_initial_activation_statistics_are_recorded_and_drawn(ran):
    (done,) = (ran["work"] / "runs" / "studies" / "tiny").glob("*.json")
    layers = json.loads(done.read_text())["layers"]
    assert [layer["depth"] for layer in layers] == list(range(1, 10))  # 8 convs, 1 linear
    assert all(layer["std"] > 0 for layer in layers)
    image = matplotlib.image.imread(ran["work"] / "out" / "std.png")
    assert image.shape[0] > 100 and image.std() > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("extra_tests: {test_last: {bn_test.mode: batch}}", "not a usable metric prefix"),
        ("table: test/acc1", "table must be a list"),
        (
            "plots: [{file: a.png, kind: layers, y: std, where: {model.arch: vgg}}]",
            "keys must be grid keys",
        ),
        ("plots: [{file: a.png, kind: depth, y: std}]", "kind is one of sweep, history, layers"),
    ],
)
def test_a_bad_extra_test_table_or_filter_is_refused(tmp_path, extra, message):
    minimal = f"configs: [{REPO / 'configs' / 'recipe' / 'cifar10_onecycle.yaml'}]\n"
    minimal += "grid: {model.init: [pytorch]}\nbudgets: {cpu: {}}\n"
    path = tmp_path / "bad.yaml"
    path.write_text(minimal + extra + "\n")
    with pytest.raises(StudyError, match=message):
        studies.load(str(path))


def test_committed_studies_use_the_extras(tmp_path):
    bn = studies.load("batchnorm_dropout")
    assert set(bn.extra_tests) == {"test_precise_bn", "test_batch_bn"}
    init = studies.load("initialisation")
    assert {p.get("kind") for p in init.plots} == {"layers", "history"}
    assert Path(init.path).parent == studies.STUDY_DIR
