"""The numbers a run reports, recomputed here from what the test itself counted or loaded:
training throughput against images counted and time measured around the callback, and
ten-crop test accuracy against crops cut by hand from the test images."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import pytest
import torch

from cnn_bench.callbacks import Throughput
from cnn_bench.data import CIFAR10DataModule
from cnn_bench.data.tta import TTAConfig
from cnn_bench.module import ImageClassifier


def _trainer(tmp_path: Path, callbacks: list, **kwargs) -> L.Trainer:
    settings = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        use_distributed_sampler=False,
        callbacks=callbacks,
    )
    return L.Trainer(**{**settings, **kwargs})


class _CroppedTraining(CIFAR10DataModule):
    """CIFAR-10 trained and validated on centre 24-pixel crops; test batches stay 32
    pixels, so the network (24-pixel input) sees test views cut from a larger image."""

    def on_after_batch_transfer(self, batch, dataloader_idx):
        images, labels = super().on_after_batch_transfer(batch, dataloader_idx)
        if self.trainer is not None and (self.trainer.training or self.trainer.validating):
            images = images[..., 4:28, 4:28]
        return images, labels


@pytest.fixture(scope="module")
def data(cifar_root: Path) -> _CroppedTraining:
    dm = _CroppedTraining(data_dir=str(cifar_root), batch_size=32, eval_batch_size=250)
    dm.setup()  # once for the module: each fit and test finds it loaded
    return dm


class _Clock(L.Callback):
    """Reads the clock where training starts and stops (epoch start and end, around each
    validation) and counts the images of every training batch; two of them bracket
    ``Throughput`` in the callback list."""

    def __init__(self) -> None:
        self.start: list[float] = []
        self.end: list[float] = []
        self.images = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += len(batch[0])

    def on_validation_start(self, trainer, pl_module) -> None:
        self.end.append(time.perf_counter())

    def on_validation_end(self, trainer, pl_module) -> None:
        self.start.append(time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.end.append(time.perf_counter())


def test_images_per_sec_is_the_images_counted_over_the_time_measured(
    tmp_path: Path, data: _CroppedTraining
) -> None:
    """Hooks run in list order: ``before`` starts its clock first and stops it before
    ``Throughput`` does, ``after`` starts last and stops last. So each stretch of training
    the callback times lies between ``before``'s start and ``after``'s end (the longest)
    and between ``after``'s start and ``before``'s end (the shortest), and its rate between
    the two. A validation in the middle of the epoch, slower than the training around it,
    must not count."""
    before, after = _Clock(), _Clock()
    torch.manual_seed(0)
    model = ImageClassifier("mlp", num_classes=10, image_size=24)
    trainer = _trainer(
        tmp_path,
        [before, Throughput(), after],
        max_steps=10,
        limit_val_batches=8,
        val_check_interval=5,
    )
    trainer.fit(model, data)
    reported = float(trainer.callback_metrics["train/images_per_sec"])
    assert before.images == after.images == 10 * 32
    assert len(before.start) == len(after.end) == 3  # validated twice: three stretches
    longest = sum(e - s for s, e in zip(before.start, after.end, strict=True))
    shortest = sum(e - s for s, e in zip(after.start, before.end, strict=True))
    slowest, fastest = before.images / longest, before.images / shortest
    assert slowest <= reported <= fastest
    assert fastest / slowest < 1.5  # the bounds are tight enough that 2x is outside them


def _ten_crops_by_hand(images: torch.Tensor) -> list[torch.Tensor]:
    """Krizhevsky et al.'s ten views of 32-pixel images at 24: four corners, the centre,
    and their mirror images."""
    crops = [
        images[..., :24, :24],
        images[..., :24, 8:],
        images[..., 8:, :24],
        images[..., 8:, 8:],
        images[..., 4:28, 4:28],
    ]
    return crops + [c.flip(-1) for c in crops]


def test_ten_crop_accuracy_recomputed_from_the_saved_checkpoint(
    tmp_path: Path, data: _CroppedTraining
) -> None:
    torch.manual_seed(0)
    model = ImageClassifier("logreg", num_classes=10, image_size=24)
    trainer = _trainer(tmp_path, [], max_steps=60)
    trainer.fit(model, data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    tested = ImageClassifier.load_from_checkpoint(path, tta=TTAConfig(views="ten_crop"))
    logged = _trainer(tmp_path, [], limit_test_batches=2).test(tested, data, verbose=False)[0]

    by_hand = ImageClassifier.load_from_checkpoint(path).eval()
    plain = ten = count = 0
    with torch.no_grad():
        for i, batch in enumerate(data.test_dataloader()):
            if i == 2:
                break
            images, labels = data.on_after_batch_transfer(batch, 0)
            assert images.shape[-1] == 32
            centre = by_hand(images[..., 4:28, 4:28])
            probs = sum(by_hand(c).softmax(1) for c in _ten_crops_by_hand(images)) / 10
            plain += int(centre.argmax(1).eq(labels).sum())
            ten += int(probs.argmax(1).eq(labels).sum())
            count += len(labels)
    assert count == 500
    assert logged["test/acc1"] == pytest.approx(plain / count)
    assert logged["test/tta_acc1"] == pytest.approx(ten / count)
    assert plain != ten  # the views changed some predictions, so the check has teeth
