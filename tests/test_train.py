"""End to end, as a user runs it: `cnn-bench fit` then `cnn-bench test` on the real CIFAR-10."""

from pathlib import Path

from tests.conftest import run_cli
from tests.wandb_files import read_wandb_run

EXPERIMENT = Path(__file__).resolve().parents[1] / "configs/experiment/lenet5_cifar10.yaml"


def _wandb_runs(root: Path) -> list[Path]:
    return sorted((root / "wandb").glob("offline-run-*"))


def test_fit_learns_checkpoints_and_test_reports(tmp_path: Path, cli_env: dict) -> None:
    fit = run_cli(
        [
            "fit",
            "--config",
            str(EXPERIMENT),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "300",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]

    # W&B ran offline with no credentials and without prompting; its run file holds the metrics.
    (run_dir,) = _wandb_runs(tmp_path)
    run = read_wandb_run(run_dir)
    assert run.metric("val/acc1")[-1] >= 0.35, run.metric("val/acc1")
    for name in ("train/loss", "train/acc1", "val/loss", "val/acc1", "val/acc5"):
        assert run.metric(name), f"{name} was not logged"
    assert "lightning_config.yaml" in run.files and run.config["cli"]["model"]["arch"] == "lenet5"
    assert run.config["num_classes"] == 10  # linked from the data, not given in the config

    ckpt_dir = tmp_path / "cnn_bench" / run.run_id / "checkpoints"
    assert (ckpt_dir / "last.ckpt").is_file()
    assert (ckpt_dir.parent / "config.yaml").is_file()

    test = run_cli(
        [
            "test",
            "--config",
            str(EXPERIMENT),
            "--ckpt_path",
            str(ckpt_dir / "last.ckpt"),
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/acc1" in test.stdout and "test/acc5" in test.stdout
    test_run = read_wandb_run(_wandb_runs(tmp_path)[-1])
    assert test_run.summary["test/acc1"] >= 0.35
    assert test_run.summary["test/acc5"] > test_run.summary["test/acc1"]
