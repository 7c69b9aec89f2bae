"""``--model.lr_scaling linear`` scales the learning rate by the global batch of every
DataModule: batch_size x processes x accumulation (the ImageFolder one once gave 0)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from cnn_bench.data import CIFAR10DataModule, ImageNetDataModule, MNISTDataModule
from cnn_bench.data.base import ImageDataModule
from cnn_bench.module import ImageClassifier
from tests.data.image_trees import make_tree


def _datamodule(which: str, tmp_path: Path, cifar_root: Path, mnist_root: Path) -> ImageDataModule:
    if which == "cifar10":
        return CIFAR10DataModule(data_dir=str(cifar_root), batch_size=24, val_size=500)
    if which == "mnist":
        return MNISTDataModule(data_dir=str(mnist_root), batch_size=40, val_size=500)
    make_tree(tmp_path / "tree", train_per_class=12, awkward=False, broken=False)
    return ImageNetDataModule(
        data_dir=str(tmp_path),
        folder="tree",
        batch_size=8,
        image_size=32,
        eval_resize=32,
        val_per_class=2,
        num_workers=0,
    )


@pytest.mark.parametrize("which", ["cifar10", "imagefolder", "mnist"])
def test_linear_scaling_uses_the_global_batch(
    which: str, tmp_path: Path, cifar_root: Path, mnist_root: Path
) -> None:
    data = _datamodule(which, tmp_path, cifar_root, mnist_root)
    model = ImageClassifier(
        "logreg",
        num_classes=data.num_classes,
        in_chans=data.in_chans,
        image_size=data.image_size,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.4),
        lr_scaling="linear",
        base_batch_size=256,
    )
    L.seed_everything(0)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=1,
        accumulate_grad_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    global_batch = data.batch_size * trainer.world_size * 2
    assert data.batch_size > 0 and model.global_batch_size() == global_batch
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(0.4 * global_batch / 256)
