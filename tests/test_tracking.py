"""What a run records, read back from its files: two real LeNet-5 runs made by
``cnn-bench seeds`` on the real CIFAR-10, their offline W&B files, ``metrics.json``,
the seed summary and ``cnn-bench report``."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from cnn_bench.commands.report import main as report_main
from cnn_bench.data.cifar10 import CIFAR10DataModule
from cnn_bench.module import ImageClassifier
from cnn_bench.stats import mean_interval, t_quantile
from tests.conftest import REPO, clean_env, run_cli
from tests.wandb_files import WandbRun, read_wandb_run

EXPERIMENT = REPO / "configs/experiment/lenet5_cifar10.yaml"
EVAL_BATCH, TEST_BATCHES = 250, 4
TEST_IMAGES = EVAL_BATCH * TEST_BATCHES
# LeNet-5 on 3x32x32, multiply-adds by hand: conv 6x3x5x5 on 28x28, conv 16x6x5x5 on
# 10x10, then 400x120, 120x84, 84x10 (pooling and tanh are not counted).
LENET5_MACS = 6 * 75 * 28 * 28 + 16 * 150 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10
LENET5_PARAMS = 6 * 76 + 16 * 151 + 120 * 401 + 84 * 121 + 10 * 85  # weights + bias per unit


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory, cifar_root: Path) -> dict[str, Any]:
    """Two seeds of LeNet-5, 2 short epochs each, tested on the first 1,000 test images."""
    root = tmp_path_factory.mktemp("seeds")
    env = clean_env(root, CNN_BENCH_DATA=str(cifar_root))
    done = run_cli(
        [
            "seeds",
            "--config",
            str(EXPERIMENT),
            "--n",
            "2",
            "--",
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "25",
            "--trainer.limit_val_batches",
            "2",
            "--trainer.limit_test_batches",
            str(TEST_BATCHES),
            "--data.eval_batch_size",
            str(EVAL_BATCH),
            "--trainer.enable_model_summary",
            "false",
        ],
        cwd=root,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (summary_path,) = (root / "seeds").glob("*.json")
    return {
        "root": root,
        "env": env,
        "stdout": done.stdout,
        "summary": json.loads(summary_path.read_text()),
        "markdown": summary_path.with_suffix(".md").read_text(),
    }


def _metrics(run: dict[str, Any]) -> dict[str, Any]:
    return json.loads((Path(run["run_dir"]) / "metrics.json").read_text())


def _wandb(root: Path, run_id: str) -> tuple[Path, WandbRun]:
    (folder,) = (root / "wandb").glob(f"offline-run-*-{run_id}")
    return folder, read_wandb_run(folder)


def _table(folder: Path, wandb_run: WandbRun, key: str) -> dict[str, Any]:
    # A logged table is a history entry whose nested keys come back as "<key>/<field>".
    (row,) = [row for row in wandb_run.history if f"{key}/_type" in row]
    assert row[f"{key}/_type"] == "table-file" and row[f"{key}/path"].startswith("media/")
    return json.loads((folder / "files" / row[f"{key}/path"]).read_text())


def test_t_quantile_matches_the_tables() -> None:
    for df, tabulated in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045)):
        assert t_quantile(0.975, df) == pytest.approx(tabulated, abs=1e-3)
    assert mean_interval([0.5])["ci95"] is None


def test_seeds_report_mean_std_and_t_interval(seeds: dict[str, Any]) -> None:
    summary = seeds["summary"]
    assert [run["seed"] for run in summary["runs"]] == [0, 1]
    for name in ("test/acc1", "test/acc5"):
        values = [_metrics(run)["test"][name] for run in summary["runs"]]
        assert [run[name] for run in summary["runs"]] == values
        mean, std = statistics.mean(values), statistics.stdev(values)
        half = 12.7062 * std / 2**0.5  # t(0.975, 1 degree of freedom) * std / sqrt(2)
        assert summary[name]["mean"] == pytest.approx(mean)
        assert summary[name]["std"] == pytest.approx(std)
        assert summary[name]["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-5)
    acc1 = [run["test/acc1"] for run in summary["runs"]]
    assert acc1[0] != acc1[1]  # the seeds made different runs
    assert min(acc1) > 0.15  # 50 steps lift LeNet-5 well above chance (0.10)
    assert f"| test/acc1 | {100 * summary['test/acc1']['mean']:.2f} |" in seeds["markdown"]


def test_wandb_run_holds_metrics_config_size_and_names(seeds: dict[str, Any]) -> None:
    groups = set()
    for run in seeds["summary"]["runs"]:
        folder, wandb_run = _wandb(seeds["root"], run["run_id"])
        record = _metrics(run)
        for name in (
            "train/loss",
            "train/acc1",
            "val/loss",
            "val/acc1",
            "test/acc1",
            "test/acc5",
            "lr-SGD",
        ):
            assert wandb_run.metric(name), f"{name} was not logged"
        speeds = wandb_run.metric("train/images_per_sec")
        assert len(speeds) == 2 and min(speeds) > 0  # once per epoch
        assert [row["train/images_per_sec"] for row in record["history"]] == speeds
        assert wandb_run.summary["test/acc1"] == pytest.approx(run["test/acc1"])
        assert wandb_run.summary["model/params"] == record["params"] == LENET5_PARAMS
        assert wandb_run.summary["model/macs"] == record["macs"] == LENET5_MACS
        # The resolved config: in the W&B config and uploaded as a file, equal to the run's.
        assert wandb_run.config["cli"]["seed_everything"] == run["seed"]
        assert "lightning_config.yaml" in wandb_run.files
        uploaded = (folder / "files" / "lightning_config.yaml").read_text()
        assert uploaded == (Path(run["run_dir"]) / "config.yaml").read_text()
        # Name and tags from the experiment; the seeds share a group.
        assert wandb_run.name == record["name"] == f"lenet5-cifar10-s{run['seed']}"
        assert wandb_run.tags == ["lenet5", "cifar10", f"seed{run['seed']}"]
        groups.add(wandb_run.group)
        assert [row["epoch"] for row in record["history"]] == [0, 1] and record["epochs"] == 2
        assert record["fit_seconds"] > record["history"][-1]["seconds"] > 0
    assert groups == {seeds["summary"]["group"]}


def test_confusion_matrix_counts_every_test_image(seeds: dict[str, Any]) -> None:
    run = seeds["summary"]["runs"][0]
    folder, wandb_run = _wandb(seeds["root"], run["run_id"])
    table = _table(folder, wandb_run, "test/confusion_matrix_table")
    assert table["columns"] == ["Actual", "Predicted", "nPredictions"]
    assert len(table["data"]) == 100
    total = sum(row[2] for row in table["data"])
    correct = sum(row[2] for row in table["data"] if row[0] == row[1])
    assert total == TEST_IMAGES
    assert correct / total == pytest.approx(run["test/acc1"], abs=1e-6)
    spec = wandb_run.config["_wandb/visualize/test/confusion_matrix"]
    assert "wandb/confusion_matrix/v1" in json.dumps(spec)
    # The same counts in the run folder, for readers without W&B.
    csv = (Path(run["run_dir"]) / "confusion_matrix.csv").read_text().splitlines()
    cells = {
        (line.split(",")[0], c): int(v)
        for line in csv[1:]
        for c, v in zip(csv[0].split(",")[1:], line.split(",")[1:], strict=True)
    }
    assert cells == {(a, p): n for a, p, n in table["data"]}


def test_worst_predictions_are_the_most_confident_mistakes(
    seeds: dict[str, Any], cifar_root: Path
) -> None:
    run = seeds["summary"]["runs"][0]
    folder, wandb_run = _wandb(seeds["root"], run["run_id"])
    table = _table(folder, wandb_run, "test/worst_predictions")
    assert table["columns"] == ["image", "label", "prediction", "confidence", "label_probability"]
    rows = table["data"]
    assert len(rows) == 32
    assert all(label != pred for _, label, pred, _, _ in rows)
    confidences = [row[3] for row in rows]
    assert confidences == sorted(confidences, reverse=True)

    # Reference: the tested checkpoint on the same 1,000 test images, outside Lightning.
    model = ImageClassifier.load_from_checkpoint(_metrics(run)["checkpoint"], map_location="cpu")
    data = CIFAR10DataModule(str(cifar_root), eval_batch_size=EVAL_BATCH)
    data.setup("test")
    wrong = []
    with torch.no_grad():
        for _, batch in zip(range(TEST_BATCHES), data.test_dataloader(), strict=False):
            images, labels = data.on_after_batch_transfer(batch, 0)
            confidence, preds = model.eval()(images).softmax(dim=1).max(dim=1)
            wrong += confidence[preds != labels].tolist()
    assert confidences == pytest.approx(sorted(wrong, reverse=True)[:32], abs=1e-5)

    # The images travel in the table's artifact: 32 PNGs of 32x32 pixels, staged for sync.
    (artifact,) = [a for a in wandb_run.artifacts.values() if "worst_predictions" in str(a)]
    pngs = [local for path, local in artifact["files"].items() if path.startswith("media/images/")]
    assert len(pngs) == 32
    assert {Image.open(p).size for p in pngs} == {(32, 32)}


def test_report_table_and_plots_hold_the_runs(seeds: dict[str, Any]) -> None:
    root, out = seeds["root"], seeds["root"] / "report"
    done = run_cli(["report", str(root), "--out", str(out)], cwd=root, env=seeds["env"])
    assert done.returncode == 0, done.stderr[-3000:]
    summary = seeds["summary"]
    acc1, acc5 = summary["test/acc1"], summary["test/acc5"]
    (row,) = [
        line
        for line in (out / "report.md").read_text().splitlines()
        if line.startswith("| lenet5-cifar10 | lenet5 |")
    ]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:6] == ["lenet5", "cifar10", "62.01K", "651.72K", "2"]
    assert cells[8] == f"{100 * acc1['mean']:.2f} ± {100 * acc1['std']:.2f}"
    assert cells[9] == f"{100 * acc5['mean']:.2f} ± {100 * acc5['std']:.2f}"
    assert cells[10] == "-" and cells[11] == "2"  # no TTA metric was logged; two seeds
    (result,) = json.loads((out / "results.json").read_text())
    records = [_metrics(run) for run in summary["runs"]]
    for epoch in (0, 1):
        assert result["history"][epoch]["val/acc1"] == pytest.approx(
            statistics.mean(r["history"][epoch]["val/acc1"] for r in records)
        )
    assert result["images_per_sec"] == pytest.approx(
        statistics.mean(r["history"][-1]["train/images_per_sec"] for r in records)
    )
    for name in ("learning_curves", "top1_vs_params", "top1_vs_time"):
        assert f"![{name}]({name}.png)" in (out / "report.md").read_text()
        picture = Image.open(out / f"{name}.png").convert("RGB")
        # matplotlib's first colour (#1f77b4) is on the canvas: the runs were drawn.
        assert (31, 119, 180) in {c for _, c in picture.getcolors(1 << 20)}


def test_report_on_a_folder_without_runs_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert report_main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"cnn-bench report: error: no runs (no metrics.json) under {tmp_path}: train with "
        "`cnn-bench fit` first, or give the folder runs were saved in"
    ]


@pytest.mark.slow
def test_ddp_logs_once_with_the_whole_test_set(tmp_path: Path, cli_env: dict) -> None:
    """Two processes (DDP on CPU): one W&B run, and a confusion matrix over both shards."""
    done = run_cli(
        [
            "fit",
            "--config",
            str(EXPERIMENT),
            "--trainer.accelerator",
            "cpu",
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "5",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.limit_test_batches",
            "3",
            "--data.eval_batch_size",
            "100",
            "--test_after_fit",
            "true",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "wandb").glob("offline-run-*")  # rank one started no run
    wandb_run = read_wandb_run(folder)
    table = _table(folder, wandb_run, "test/confusion_matrix_table")
    total = sum(row[2] for row in table["data"])
    correct = sum(row[2] for row in table["data"] if row[0] == row[1])
    assert total == 2 * 3 * 100  # each process tested its own 3 batches of 100
    assert correct / total == pytest.approx(wandb_run.summary["test/acc1"], abs=1e-6)
    rows = _table(folder, wandb_run, "test/worst_predictions")["data"]
    assert len(rows) == 32 and all(label != pred for _, label, pred, _, _ in rows)
    assert [r[3] for r in rows] == sorted((r[3] for r in rows), reverse=True)
    assert len(wandb_run.metric("train/images_per_sec")) == 1
