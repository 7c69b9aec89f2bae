"""Tampered CIFAR-10 files: each is refused before training with one line naming the file
and what is wrong, never trained on (a shifted label would train silently) and never a
traceback."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnn_bench.data.cifar10 import FOLDER, read_cifar10
from cnn_bench.data.common import DataError
from cnn_bench.data.safe_pickle import load_pickle
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
LENET = REPO / "configs/experiment/lenet5_cifar10.yaml"


def _test_batch(cifar_root: Path) -> dict[str, Any]:
    batch = load_pickle(cifar_root / FOLDER / "test_batch")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _pickled(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=2)


def _cases(batch: dict[str, Any]) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, what the message must say)."""
    data, labels = batch["data"], list(batch["labels"])
    raw = _pickled(batch)
    return {
        "one_label_short": (_pickled({**batch, "labels": labels[:-1]}), "10000 images but 9999"),
        "label_out_of_range": (_pickled({**batch, "labels": [10, *labels[1:]]}), "outside 0..9"),
        "negative_label": (_pickled({**batch, "labels": [-1, *labels[1:]]}), "outside 0..9"),
        "float_labels": (_pickled({**batch, "labels": [0.5] * len(labels)}), "integers"),
        "wrong_shape": (_pickled({**batch, "data": data[:, :3000]}), "3000 values"),
        "wrong_dtype": (_pickled({**batch, "data": data.astype(np.float32)}), "uint8"),
        "no_labels": (_pickled({"data": data}), "no labels"),
        "not_a_dict": (_pickled([data, labels]), "not a CIFAR-10 batch"),
        "truncated": (raw[: len(raw) // 2], "unreadable"),
        "empty": (b"", "unreadable"),
        "random_bytes": (np.random.default_rng(0).bytes(4096), "unreadable"),
    }


@pytest.fixture(scope="module")
def cases(cifar_root: Path) -> dict[str, tuple[bytes, str]]:
    return _cases(_test_batch(cifar_root))


def _tampered_root(tmp_path: Path, cifar_root: Path, test_batch: bytes) -> Path:
    """The real training batches beside a tampered test batch."""
    folder = tmp_path / "data" / FOLDER
    folder.mkdir(parents=True)
    for entry in os.listdir(cifar_root / FOLDER):
        if entry != "test_batch":
            (folder / entry).symlink_to(cifar_root / FOLDER / entry)
    (folder / "test_batch").write_bytes(test_batch)
    return folder.parent


@pytest.mark.parametrize(
    "name",
    [
        "one_label_short",
        "label_out_of_range",
        "negative_label",
        "float_labels",
        "wrong_shape",
        "wrong_dtype",
        "no_labels",
        "not_a_dict",
        "truncated",
        "empty",
        "random_bytes",
    ],
)
def test_a_tampered_batch_is_refused_naming_the_file(
    name: str, cases: dict, tmp_path: Path, cifar_root: Path
) -> None:
    content, said = cases[name]
    root = _tampered_root(tmp_path, cifar_root, content)
    with pytest.raises(DataError) as refused:
        read_cifar10(root, train=False)
    message = str(refused.value)
    assert str(root / FOLDER / "test_batch") in message and said in message, message
    assert "\n" not in message


def test_the_cli_refuses_a_tampered_batch_with_one_line(
    cases: dict, tmp_path: Path, cifar_root: Path, cli_env: dict
) -> None:
    root = _tampered_root(tmp_path, cifar_root, cases["one_label_short"][0])
    done = run_cli(
        [
            "fit",
            "--config",
            str(LENET),
            "--data.data_dir",
            str(root),
            "--trainer.fast_dev_run",
            "true",
        ],
        cwd=tmp_path,
        env=cli_env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("cnn-bench: error:")]
    assert "10000 images but 9999 labels" in line
