"""Training subsets and label noise, on the real MNIST and CIFAR-10 files: balanced,
seeded, disjoint from validation, exactly the asked fraction of labels changed, and
validation and test labels never touched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnn_bench.data import CIFAR10DataModule, DataError, MNISTDataModule
from cnn_bench.data.subsets import balanced_subset, noisy_labels
from tests.conftest import REPO, run_cli
from tests.hostile.one_line import error_line


def _modules(mnist_root: Path, cifar_root: Path, **kwargs):
    return [
        lambda **extra: MNISTDataModule(data_dir=str(mnist_root), **{**kwargs, **extra}),
        lambda **extra: CIFAR10DataModule(data_dir=str(cifar_root), **{**kwargs, **extra}),
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["mnist", "cifar10"])
def test_subset_is_balanced_seeded_and_disjoint_from_validation(
    which: int, mnist_root: Path, cifar_root: Path
) -> None:
    build = _modules(mnist_root, cifar_root, train_subset=1003)[which]
    torch.manual_seed(0)
    a = build()
    a.setup()
    torch.manual_seed(99)  # another training seed: the same subset
    b = build()
    b.setup()
    counts = torch.bincount(a.datasets["train"].labels, minlength=10)
    assert len(a.datasets["train"]) == 1003
    assert counts.max() - counts.min() == 1 and sorted(counts.tolist())[-3:] == [101] * 3
    assert torch.equal(a.train_indices, b.train_indices)
    assert not set(a.train_indices.tolist()) & set(a.val_indices.tolist())
    full = build(train_subset=None)
    full.setup()
    # Validation is the same with or without a subset, and the subset is drawn from the rest.
    assert torch.equal(full.val_indices, a.val_indices)
    assert set(a.train_indices.tolist()) <= set(full.train_indices.tolist())
    other = build(split_seed=1)
    other.setup()
    assert not torch.equal(other.train_indices, a.train_indices)


@pytest.mark.parametrize("which", [0, 1], ids=["mnist", "cifar10"])
def test_label_noise_changes_exactly_the_fraction_and_only_training_labels(
    which: int, mnist_root: Path, cifar_root: Path
) -> None:
    build = _modules(mnist_root, cifar_root, train_subset=2000)[which]
    clean, noisy = build(), build(label_noise=0.2)
    clean.setup()
    noisy.setup()
    assert torch.equal(clean.train_indices, noisy.train_indices)  # the same images
    changed = clean.datasets["train"].labels != noisy.datasets["train"].labels
    assert int(changed.sum()) == 400  # round(0.2 * 2000), each to a different class
    for split in ("val", "test"):
        assert torch.equal(clean.datasets[split].labels, noisy.datasets[split].labels)
        assert torch.equal(clean.datasets[split].images, noisy.datasets[split].images)
    assert noisy.hparams.label_noise == 0.2 and noisy.hparams.train_subset == 2000
    again = build(label_noise=0.2)
    again.setup()
    assert torch.equal(again.datasets["train"].labels, noisy.datasets["train"].labels)


def test_noisy_labels_are_exact_different_and_spread_over_the_other_classes() -> None:
    labels = torch.arange(10).repeat(1000)
    for fraction in (0.0, 0.15, 0.333, 1.0):
        noisy = noisy_labels(labels, fraction, 10, seed=3)
        assert int((noisy != labels).sum()) == round(fraction * len(labels))
    noisy = noisy_labels(labels, 1.0, 10, seed=3)
    # Every label moved, to each of the nine other classes about equally often.
    shifts = torch.bincount((noisy - labels) % 10, minlength=10)
    assert shifts[0] == 0 and shifts[1:].min() > 0.8 * 10_000 / 9
    with pytest.raises(DataError, match="between 0 and 1"):
        noisy_labels(labels, 1.5, 10, seed=0)


def test_a_subset_a_class_cannot_fill_is_refused() -> None:
    labels = torch.tensor([0] * 50 + [1] * 5)
    with pytest.raises(DataError, match="needs 10 images of class 1"):
        balanced_subset(labels, 20, 2, seed=0)
    with pytest.raises(DataError, match="between 1 and 55"):
        balanced_subset(labels, 56, 2, seed=0)


def test_label_noise_outside_0_to_1_is_one_line_from_the_shell(tmp_path: Path) -> None:
    done = run_cli(
        [
            "fit",
            "--data",
            str(REPO / "configs/data/mnist.yaml"),
            "--model.arch",
            "logreg",
            "--data.label_noise",
            "1.5",
        ],
        cwd=tmp_path,
    )
    error_line(done, "label_noise", "1.5")
