"""The MNIST DataModule on the copy ``make data`` puts in place: counts read from the
files, the official test labels, a fixed validation split, LeNet-5's 32 x 32 input."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnn_bench.data import DataError, MNISTDataModule
from cnn_bench.data.mnist import FOLDER, read_mnist
from tests.conftest import REPO, run_cli
from tests.hostile.one_line import error_line


def test_reads_every_image_the_files_hold(mnist_root: Path) -> None:
    dm = MNISTDataModule(data_dir=str(mnist_root), val_size=500)
    dm.setup("fit")
    # The copy's training split is 5,000 images (500 per class), its test split the official 10,000.
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sizes == {"train": 4500, "val": 500, "test": 10_000}
    train, test = dm.datasets["train"], dm.datasets["test"]
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 28, 28)
    assert (dm.num_classes, dm.in_chans, dm.image_size) == (10, 1, 28)
    assert list(dm.classes) == [str(d) for d in range(10)]
    # The official test set starts 7, 2, 1, 0, 4, 1, 4, 9, 5, 9 and has 980 zeros, 1135 ones.
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(test.labels)[:2].tolist() == [980, 1135]
    all_train = torch.cat([train.labels, dm.datasets["val"].labels])
    assert torch.bincount(all_train).tolist() == [500] * 10
    # Digits are white on black: mostly background (mean ~33 of 255 on MNIST).
    assert 25 < float(dm.mean) < 40 and 70 < float(dm.std) < 90


def test_reads_the_gzipped_files_the_same(mnist_root: Path, tmp_path: Path) -> None:
    raw = tmp_path / FOLDER
    raw.mkdir(parents=True)
    for gz in (mnist_root / FOLDER).glob("t10k-*.gz"):
        shutil.copyfile(gz, raw / gz.name)
    images, labels = read_mnist(tmp_path, train=False)
    expected_images, expected_labels = read_mnist(mnist_root, train=False)
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_padding_to_32_keeps_the_digit_in_the_middle(mnist_root: Path) -> None:
    plain = MNISTDataModule(data_dir=str(mnist_root))
    padded = MNISTDataModule(data_dir=str(mnist_root), pad_to_32=True)
    assert padded.image_size == 32
    plain.setup()
    padded.setup()
    a, b = plain.datasets["test"].images, padded.datasets["test"].images
    assert b.shape[1:] == (1, 32, 32)
    assert torch.equal(b[:, :, 2:30, 2:30], a) and b[:, :, :2].sum() == 0
    assert b[:, :, :, 30:].sum() == 0


def test_validation_split_is_fixed_and_independent_of_the_training_seed(mnist_root: Path) -> None:
    torch.manual_seed(1)
    a = MNISTDataModule(data_dir=str(mnist_root))
    a.setup()
    torch.manual_seed(2)
    b = MNISTDataModule(data_dir=str(mnist_root))
    b.setup()
    assert torch.equal(a.val_indices, b.val_indices)
    assert not set(a.val_indices.tolist()) & set(a.train_indices.tolist())
    c = MNISTDataModule(data_dir=str(mnist_root), split_seed=1)
    c.setup()
    assert not torch.equal(a.val_indices, c.val_indices)


def _write_idx(path: Path, magic: int, shape: tuple[int, ...], data: bytes) -> None:
    header = np.array([magic, *shape], dtype=">u4").tobytes()
    path.write_bytes(header + data)


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("wrong_magic", "magic number"),
        ("short_header", "shorter than an IDX header"),
        ("truncated", "holds fewer"),
        ("trailing_bytes", "holds more"),
        ("huge_count", "holds fewer"),
        ("count_mismatch", "images but"),
        ("label_out_of_range", "outside 0..9"),
        ("wrong_size", "not 28 x 28"),
        ("bad_gzip", "unreadable"),
    ],
)
def test_hostile_files_are_one_line_data_errors(
    case: str, said: str, mnist_root: Path, tmp_path: Path
) -> None:
    raw = tmp_path / FOLDER
    raw.mkdir(parents=True)
    images, labels = raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"
    pixels = bytes(3 * 28 * 28)
    _write_idx(images, 0x803, (3, 28, 28), pixels)
    _write_idx(labels, 0x801, (3,), bytes([1, 2, 3]))
    if case == "wrong_magic":
        _write_idx(images, 0x80D, (3, 28, 28), pixels)
    elif case == "short_header":
        images.write_bytes(b"\x00\x00\x08\x03\x00")
    elif case == "truncated":
        _write_idx(images, 0x803, (3, 28, 28), pixels[:-1])
    elif case == "trailing_bytes":
        _write_idx(images, 0x803, (3, 28, 28), pixels + b"\x00")
    elif case == "huge_count":  # a header claiming 4 billion images: refused, not allocated
        _write_idx(images, 0x803, (2**32 - 1, 28, 28), pixels)
    elif case == "count_mismatch":
        _write_idx(labels, 0x801, (2,), bytes([1, 2]))
    elif case == "label_out_of_range":
        _write_idx(labels, 0x801, (3,), bytes([1, 2, 10]))
    elif case == "wrong_size":
        _write_idx(images, 0x803, (3, 27, 28), bytes(3 * 27 * 28))
    elif case == "bad_gzip":  # a whole file, gzipped and cut short
        whole = gzip.compress(images.read_bytes())
        images.unlink()
        (raw / "t10k-images-idx3-ubyte.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError) as err:
        read_mnist(tmp_path, train=False)
    message = str(err.value)
    assert said in message and "\n" not in message


def test_missing_data_is_one_line_from_the_shell(tmp_path: Path) -> None:
    done = run_cli(
        [
            "fit",
            "--data",
            str(REPO / "configs/data/mnist.yaml"),
            "--model.arch",
            "logreg",
            "--data.data_dir",
            str(tmp_path / "nowhere"),
            "--trainer.max_steps",
            "1",
        ],
        cwd=tmp_path,
    )
    error_line(done, "MNIST not found", "--data.download")


def test_the_mnist_config_trains_lenet5_on_padded_digits(
    tmp_path: Path, mnist_root: Path, cli_env: dict[str, str]
) -> None:
    cli_env["CNN_BENCH_DATA"] = str(mnist_root)
    done = run_cli(
        [
            "fit",
            "--data",
            str(REPO / "configs/data/mnist.yaml"),
            "--data.pad_to_32",
            "true",
            "--data.train_subset",
            "200",
            "--data.label_noise",
            "0.1",
            "--model.arch",
            "lenet5",
            "--trainer.max_steps",
            "2",
            "--trainer.limit_val_batches",
            "1",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    # It trains at all only if the data's one channel and 32 pixels reached the network.
    assert done.returncode == 0, done.stderr[-3000:]
    (config,) = tmp_path.rglob("cnn_bench/*/config.yaml")
    text = config.read_text()
    # The subset and the noise are part of the run's record.
    assert "train_subset: 200" in text and "label_noise: 0.1" in text
    assert "pad_to_32: true" in text
