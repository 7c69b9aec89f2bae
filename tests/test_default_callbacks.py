"""Every run's callbacks by name: one changed from the command line or a YAML file, the
others kept, more added with --trainer.callbacks+=, and those a switch turns off dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from cnn_bench.callbacks import TestPredictions
from cnn_bench.cli import cli
from cnn_bench.default_callbacks import DEFAULT_CALLBACKS
from tests.conftest import REPO

LENET = str(REPO / "configs/experiment/lenet5_cifar10.yaml")


def _run(tmp_path: Path, cifar_root: Path, *args: str) -> Any:
    return cli(
        [
            "--config",
            LENET,
            "--trainer.logger",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--data.data_dir",
            str(cifar_root),
            *args,
        ],
        run=False,
    )


def _callbacks(tmp_path: Path, cifar_root: Path, *args: str) -> list[Callback]:
    return _run(tmp_path, cifar_root, *args).trainer.callbacks


def _kinds(callbacks: list[Callback]) -> list[str]:
    return [type(c).__name__ for c in callbacks]


def test_a_flag_changes_one_callback_and_a_yaml_another_and_the_rest_stay(
    tmp_path: Path, cifar_root: Path
) -> None:
    default = _callbacks(tmp_path, cifar_root)
    one = tmp_path / "fewer_images.yaml"
    one.write_text("test_predictions:\n  num_images: 4\n")
    changed = _callbacks(
        tmp_path, cifar_root, "--checkpoint.every_n_train_steps", "100", "--config", str(one)
    )

    assert _kinds(changed) == _kinds(default)  # the same callbacks, in the same order
    best, periodic = [c for c in changed if isinstance(c, ModelCheckpoint)]
    assert periodic._every_n_train_steps == 100 and periodic.save_last
    assert best.monitor == "val/acc1" and best._every_n_train_steps == 0  # untouched
    (predictions,) = [c for c in changed if isinstance(c, TestPredictions)]
    assert predictions.num_images == 4
    (default_predictions,) = [c for c in default if isinstance(c, TestPredictions)]
    assert default_predictions.num_images == 32


def test_trainer_callbacks_adds_to_the_defaults(tmp_path: Path, cifar_root: Path) -> None:
    added = _callbacks(
        tmp_path,
        cifar_root,
        "--trainer.callbacks+=EarlyStopping",
        "--trainer.callbacks.monitor",
        "val/acc1",
    )
    (stop,) = [c for c in added if isinstance(c, EarlyStopping)]
    assert stop.monitor == "val/acc1"
    kinds = set(_kinds(added))
    assert {cls.__name__ for cls in DEFAULT_CALLBACKS.values()} - {"LearningRateMonitor"} <= kinds


def test_switches_turned_off_drop_the_callbacks_they_contradict(
    tmp_path: Path, cifar_root: Path
) -> None:
    kinds = _kinds(
        _callbacks(
            tmp_path,
            cifar_root,
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_checkpointing",
            "false",
        )
    )
    assert "ModelCheckpoint" not in kinds and "ProgressBar" not in kinds
    assert "LearningRateMonitor" not in kinds  # no logger
    assert "SaveLastOnEnd" in kinds and "StopOnNonFinite" in kinds


def test_the_default_profiler_profiles_nothing_and_a_named_one_replaces_it(
    tmp_path: Path, cifar_root: Path
) -> None:
    from lightning.pytorch.profilers import SimpleProfiler

    from cnn_bench.profiler import NoProfiler

    def profiler(*args: str) -> object:
        return _run(tmp_path, cifar_root, *args).trainer.profiler

    quiet = profiler()
    assert isinstance(quiet, NoProfiler)
    with quiet.profile("[Callback]x.on_train_batch_end") as inside:
        assert inside is None
    simple = profiler("--trainer.profiler", "simple")
    assert isinstance(simple, SimpleProfiler)
    with simple.profile("step"):
        pass
    assert len(simple.recorded_durations["step"]) == 1
