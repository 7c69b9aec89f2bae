"""Bad checkpoints given to ``--ckpt_path`` (and found by ``--ckpt_path last``, and given
to ``ImageClassifier.load_from_checkpoint``): missing, empty, truncated, random bytes, a
plain state dict, another network's or another model's weights, a pickle that would run
code, a FIFO that hung the run. Each is refused before any data is read, in one line
naming the file and what is wrong; loading stays ``weights_only=True`` and the message
never advises otherwise."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cnn_bench.checkpoint import CheckpointError
from cnn_bench.module import ImageClassifier
from tests.conftest import clean_env, run_cli
from tests.hostile.one_line import error_line

REPO = Path(__file__).resolve().parents[2]
LENET = REPO / "configs/experiment/lenet5_cifar10.yaml"
# Two training steps and one validation batch: a real checkpoint in a few seconds.
TINY = [
    "--trainer.max_steps",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--data.val_size",
    "500",
    "--trainer.enable_progress_bar",
    "false",
]
# Refused before the data is read, so no step of these runs is ever taken.
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
TIMEOUT = 120


class RunsCode:
    """Unpickled, it would create ``marker``: what a tampered checkpoint can do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, cifar_root: Path) -> Path:
    """The folder of one real fit (W&B offline): ``cnn_bench/<run>/checkpoints/last.ckpt``."""
    root = tmp_path_factory.mktemp("trained")
    env = clean_env(root, CNN_BENCH_DATA=str(cifar_root))
    done = run_cli(["fit", "--config", str(LENET), *TINY], cwd=root, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def good(trained: Path) -> Path:
    (last,) = trained.glob("cnn_bench/*/checkpoints/last.ckpt")
    return last


def _without(checkpoint: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in checkpoint.items() if k not in keys}


@pytest.fixture(scope="module")
def bad(good: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> a bad checkpoint file made from the good one."""
    folder = tmp_path_factory.mktemp("bad")
    raw = good.read_bytes()
    checkpoint = torch.load(good, map_location="cpu", weights_only=True)
    files: dict[str, bytes | dict[str, Any]] = {
        "empty": b"",
        "truncated": raw[: len(raw) // 2],
        "random_bytes": np.random.default_rng(0).bytes(4096),
        "plain_state_dict": checkpoint["state_dict"],
        # Another network's weights and no hyper-parameters to rebuild it from.
        "foreign_weights": {
            **_without(checkpoint, "hyper_parameters"),
            "state_dict": ImageClassifier("logreg", image_size=32).state_dict(),
        },
        # The same network for 100 classes: names match, shapes do not.
        "other_shapes": {
            **_without(checkpoint, "hyper_parameters"),
            "state_dict": ImageClassifier("lenet5", num_classes=100).state_dict(),
        },
        # Another LightningModule's checkpoint.
        "foreign_module": {
            **checkpoint,
            "hyper_parameters": {"hidden_dim": 64, "learning_rate": 0.1},
            "state_dict": {"encoder.weight": torch.zeros(4, 4)},
        },
        "tampered": {**checkpoint, "callbacks": RunsCode(folder / "code_ran")},
        "weights_only": _without(checkpoint, "optimizer_states", "lr_schedulers", "loops"),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name}.ckpt"
        if isinstance(content, bytes):
            paths[name].write_bytes(content)
        else:
            torch.save(content, paths[name])
    paths["missing"] = folder / "missing.ckpt"
    paths["folder"] = folder / "folder.ckpt"
    paths["folder"].mkdir()
    paths["fifo"] = folder / "fifo.ckpt"  # torch.load of it blocked forever
    os.mkfifo(paths["fifo"])
    return paths


# name -> (the command given it, what the message says); each command gets a few.
REFUSED = {
    "missing": ("fit", "not found"),
    "folder": ("validate", "is a folder"),
    "fifo": ("test", "is not a regular file"),
    "empty": ("test", "damaged or not a checkpoint"),
    "truncated": ("predict", "damaged or not a checkpoint"),
    "random_bytes": ("validate", "not a checkpoint"),
    "plain_state_dict": ("fit", "a plain state_dict"),
    "foreign_weights": ("validate", "does not fit this model: 10 weights missing"),
    "other_shapes": ("test", "of another shape (e.g. model.classifier.6.weight (100, 84)"),
    "foreign_module": ("predict", "written by another model"),
    "tampered": ("fit", "asks for posix.system"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_bad_checkpoint_is_refused_in_one_line(
    name: str, bad: dict[str, Path], tmp_path: Path, cli_env: dict
) -> None:
    path = bad[name]
    command, said = REFUSED[name]
    done = run_cli(
        [command, "--config", str(LENET), *QUIET, "--ckpt_path", str(path)],
        cwd=tmp_path,
        env=cli_env,
        timeout=TIMEOUT,
    )
    error_line(done, str(path), said)
    assert not (path.parent / "code_ran").exists()


def test_fit_refuses_to_resume_from_weights_alone(
    bad: dict[str, Path], tmp_path: Path, cli_env: dict
) -> None:
    path = bad["weights_only"]
    done = run_cli(
        ["fit", "--config", str(LENET), *QUIET, "--ckpt_path", str(path)],
        cwd=tmp_path,
        env=cli_env,
        timeout=TIMEOUT,
    )
    error_line(done, str(path), "holds weights only")


def test_ckpt_path_last_refuses_a_truncated_last_ckpt(
    trained: Path, good: Path, tmp_path: Path, cifar_root: Path
) -> None:
    shutil.copytree(trained / "cnn_bench", tmp_path / "cnn_bench")
    last = tmp_path / good.relative_to(trained)
    last.write_bytes(good.read_bytes()[:1000])
    done = run_cli(
        ["fit", "--config", str(LENET), *TINY, "--ckpt_path", "last"],
        cwd=tmp_path,
        env=clean_env(tmp_path, CNN_BENCH_DATA=str(cifar_root)),
        timeout=TIMEOUT,
    )
    error_line(done, str(last), REFUSED["truncated"][1])


@pytest.mark.parametrize(
    "name",
    [
        "missing",
        "empty",
        "truncated",
        "random_bytes",
        "plain_state_dict",
        "foreign_module",
        "tampered",
    ],
)
def test_load_from_checkpoint_refuses_a_bad_file_in_one_line(
    name: str, bad: dict[str, Path]
) -> None:
    path = bad[name]
    with pytest.raises(CheckpointError) as refused:
        ImageClassifier.load_from_checkpoint(path, map_location="cpu")
    message = str(refused.value)
    assert str(path) in message and REFUSED[name][1] in message, message
    assert "\n" not in message and "weights_only=False" not in message
    assert not (path.parent / "code_ran").exists()


def test_load_from_checkpoint_still_loads_a_good_one(good: Path) -> None:
    assert type(ImageClassifier.load_from_checkpoint(good).model).__name__ == "LeNet5"
