"""The CIFAR-10 DataModule: the real files, a fixed validation split, safe reading."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cnn_bench.data import CIFAR10DataModule, DataError
from cnn_bench.data.safe_pickle import UnsafePickleError, load_pickle
from tests.conftest import run_cli


def test_reads_the_real_files_with_all_images(cifar_root: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(cifar_root))
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sizes == {"train": 45_000, "val": 5_000, "test": 10_000}
    train = dm.datasets["train"]
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 32, 32)
    # every class is present in every split, roughly balanced
    for split in dm.datasets.values():
        counts = torch.bincount(split.labels, minlength=10)
        assert counts.min() > 0.8 * len(split) / 10
    # normalisation statistics come from the training images (CIFAR-10: ~125, ~123, ~114)
    assert torch.allclose(dm.mean, torch.tensor([125.3, 123.0, 113.9]), atol=1.5)


def test_validation_split_is_disjoint_and_fixed(cifar_root: Path) -> None:
    a = CIFAR10DataModule(data_dir=str(cifar_root), val_size=5000)
    b = CIFAR10DataModule(data_dir=str(cifar_root), val_size=5000)
    torch.manual_seed(123)  # a different training seed must not move the split
    a.setup()
    torch.manual_seed(7)
    b.setup()
    assert torch.equal(a.val_indices, b.val_indices)
    val, train = set(a.val_indices.tolist()), set(a.train_indices.tolist())
    assert not val & train and len(val | train) == 50_000
    c = CIFAR10DataModule(data_dir=str(cifar_root), val_size=5000, split_seed=1)
    c.setup()
    assert not torch.equal(a.val_indices, c.val_indices)


def test_missing_data_is_one_clear_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    empty = tmp_path / "nowhere"
    result = run_cli(
        [
            "fit",
            "--model.arch",
            "lenet5",
            "--data",
            "cnn_bench.data.CIFAR10DataModule",
            "--data.data_dir",
            str(empty),
            "--trainer.max_steps",
            "1",
        ],
        cwd=tmp_path,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("cnn-bench: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert str(empty.resolve()) in errors[0] and "--data.download" in errors[0]
    assert "Traceback" not in result.stderr


def test_missing_data_without_download_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="CIFAR-10 not found"):
        CIFAR10DataModule(data_dir=str(tmp_path)).prepare_data()


class _RunsCode:
    """A pickle payload that would create a file if unpickled with pickle.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_that_runs_code_is_refused_and_the_code_does_not_run(
    cifar_root: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    # A real batch with one extra entry that would run code.
    real = load_pickle(cifar_root / "cifar-10-batches-py" / "data_batch_1")
    real[b"payload"] = _RunsCode(marker)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(real))
    with pytest.raises(UnsafePickleError, match="refusing to load pathlib"):
        load_pickle(folder / "data_batch_1")
    assert not marker.exists()

    result = run_cli(
        [
            "fit",
            "--model.arch",
            "lenet5",
            "--data",
            "cnn_bench.data.CIFAR10DataModule",
            "--data.data_dir",
            str(tmp_path),
            "--trainer.max_steps",
            "1",
        ],
        cwd=tmp_path,
    )
    assert result.returncode != 0 and not marker.exists()
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("cnn-bench: error:")]
    assert len(errors) == 1 and "not a plain data file" in errors[0]


def test_plain_numpy_pickles_are_read(tmp_path: Path) -> None:
    data = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [1, 2]}
    (tmp_path / "f").write_bytes(pickle.dumps(data, protocol=2))
    back = load_pickle(tmp_path / "f")
    assert np.array_equal(back[b"data"], data[b"data"]) and back[b"labels"] == [1, 2]
