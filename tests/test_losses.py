"""The squared loss on one-hot targets, and the frozen hidden layer of random features."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch

from cnn_bench.data import MNISTDataModule
from cnn_bench.losses import SquaredLoss
from cnn_bench.module import ImageClassifier

OUTPUTS = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]])
LABELS = torch.tensor([2, 0])


def test_squared_loss_is_the_batch_mean_of_the_summed_squares_on_raw_outputs() -> None:
    # Targets [0, 0, 1] and [1, 0, 0]: (1 + 0 + 1) and (0.25 + 1 + 0), mean 1.625.
    assert SquaredLoss()(OUTPUTS, LABELS).item() == pytest.approx(1.625)
    model = ImageClassifier("mlp", num_classes=3, image_size=8, loss="squared")
    assert model.criterion(OUTPUTS, LABELS).item() == pytest.approx(1.625)
    # Soft targets (mixup) as given: the first row's target is [0, 0.5, 0.5].
    soft = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    assert SquaredLoss()(OUTPUTS, soft).item() == pytest.approx(((1 + 0.25 + 2.25) + 1.25) / 2)
    # Smoothing 0.3 over 3 classes: targets 0.1 and 0.8, as cross-entropy smooths them.
    smoothed = ((0.9**2 + 0.1**2 + 1.2**2) + (0.3**2 + 1.1**2 + 0.1**2)) / 2
    assert SquaredLoss(0.3)(OUTPUTS, LABELS).item() == pytest.approx(smoothed)
    default = ImageClassifier("mlp", num_classes=3, image_size=8)
    assert isinstance(default.criterion, torch.nn.CrossEntropyLoss)


def test_an_unknown_loss_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown loss 'hinge': choose one of cross_entropy"):
        ImageClassifier("mlp", num_classes=3, image_size=8, loss="hinge")


@pytest.fixture(scope="module")
def mnist(mnist_root: Path) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(mnist_root), batch_size=64, val_size=500)
    dm.setup()
    return dm


def _trainer(tmp_path: Path, steps: int) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )


def test_an_mlp_learns_mnist_with_the_squared_loss(tmp_path: Path, mnist: MNISTDataModule) -> None:
    L.seed_everything(0)
    model = ImageClassifier(
        "mlp",
        num_classes=10,
        in_chans=1,
        image_size=28,
        arch_kwargs={"depth": 1, "width": 64},
        loss="squared",
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    )
    trainer = _trainer(tmp_path, steps=40)
    trainer.fit(model, mnist)
    (result,) = trainer.validate(model, mnist, verbose=False)
    assert result["val/acc1"] > 0.6  # chance is 0.1; 40 steps of cross-entropy give ~0.85
    assert result["val/loss"] < 0.9  # an all-zero output scores exactly 1.0


def test_random_features_train_only_the_output_layer(
    tmp_path: Path, mnist: MNISTDataModule
) -> None:
    torch.manual_seed(0)
    model = ImageClassifier(
        "mlp",
        num_classes=10,
        in_chans=1,
        image_size=28,
        arch_kwargs={"depth": 1, "width": 32},
        trainable="head",
        loss="squared",
        l2_penalty=0.1,  # a penalty, too, must leave the frozen layer where it was
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
    )
    before = copy.deepcopy(model.model.state_dict())
    _trainer(tmp_path, steps=5).fit(model, mnist)
    after = model.model.state_dict()
    # layers: Flatten, Linear(784, 32), ReLU, Dropout, Linear(32, 10).
    assert list(after) == ["layers.1.weight", "layers.1.bias", "layers.4.weight", "layers.4.bias"]
    for name in ("layers.1.weight", "layers.1.bias"):
        assert torch.equal(after[name], before[name]), name
    for name in ("layers.4.weight", "layers.4.bias"):
        assert not torch.equal(after[name], before[name]), name
