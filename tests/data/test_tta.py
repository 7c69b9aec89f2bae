"""Test-time augmentation: the views, their averaging, and `test` logging both results."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torchvision.transforms import v2

from cnn_bench import tta
from cnn_bench.data import CIFAR10DataModule, augment
from cnn_bench.module import ImageClassifier
from cnn_bench.tta import TTAConfig


@pytest.fixture(scope="module")
def cifar(cifar_root: Path) -> CIFAR10DataModule:
    dm = CIFAR10DataModule(data_dir=str(cifar_root), eval_batch_size=250, crop_padding=4, cutout=8)
    dm.setup()
    return dm


def _model(size: int = 8, classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, classes)).eval()


@pytest.mark.parametrize(
    ("views", "count"),
    [
        ("none", 1),
        ("flip", 2),
        ("flip_translate", 10),
        ("five_crop", 5),
        ("ten_crop", 10),
        ("augment", 3),
    ],
)
@pytest.mark.parametrize("canvas", [8, 12])
def test_view_counts_and_shapes(views: str, count: int, canvas: int) -> None:
    config = TTAConfig(views=views, num_augment=3)
    x = torch.randn(4, 3, canvas, canvas)
    flip = lambda images, gen: augment.random_flip(images, gen)  # noqa: E731
    made = list(tta.views(x, config, 8, flip, torch.Generator().manual_seed(0)))
    assert len(made) == count == tta.num_views(config)
    assert all(v.shape == (4, 3, 8, 8) for v in made)


def test_the_identity_view_is_plain_evaluation_exactly() -> None:
    model, x = _model(), torch.randn(16, 3, 12, 12)
    plain = model(tta.center_crop(x, 8))
    scores = tta.predict(model, x, TTAConfig(views="none"), crop_size=8)
    assert torch.equal(scores, plain.softmax(dim=1))
    logits = tta.predict(model, x, TTAConfig(views="none", average="logits"), crop_size=8)
    assert torch.equal(logits, plain)


def test_ten_crop_is_torchvisions_ten_crop_of_each_image() -> None:
    x = torch.randint(0, 256, (3, 3, 12, 12), dtype=torch.uint8)
    batched = list(tta.views(x, TTAConfig(views="ten_crop"), 8))
    for i in range(3):
        for view, expected in zip(batched, v2.TenCrop(8)(x[i]), strict=True):
            assert torch.equal(view[i], expected)
    # AlexNet's corners: top-left is the image's top-left, the mirrors follow the five crops
    assert torch.equal(batched[0], x[..., :8, :8])
    assert torch.equal(batched[9], x[..., 2:10, 2:10].flip(-1))


def test_flip_translate_shifts_and_mirrors() -> None:
    x = torch.randn(2, 3, 8, 8)
    made = list(tta.views(x, TTAConfig(views="flip_translate", translate=2), 8))
    assert torch.equal(made[0], x) and torch.equal(made[1], x.flip(-1))
    # (+2, +2): the image moved up and left by two pixels, reflection beyond the edge
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    assert torch.equal(made[8], padded[..., 4:12, 4:12])
    assert torch.equal(made[8][..., :6, :6], x[..., 2:, 2:])


def test_average_over_views_with_weights() -> None:
    model, x = _model(), torch.randn(6, 3, 8, 8)
    a, b = model(x), model(x.flip(-1))
    probs = tta.predict(model, x, TTAConfig(views="flip"))
    assert torch.allclose(probs, (a.softmax(1) + b.softmax(1)) / 2)
    logits = tta.predict(model, x, TTAConfig(views="flip", average="logits", weights=[3, 1]))
    assert torch.allclose(logits, 0.75 * a + 0.25 * b)
    with pytest.raises(ValueError, match="make 2 views, but 3 weights"):
        TTAConfig(views="flip", weights=[1, 1, 1])


def test_augment_views_are_the_datamodules_training_augmentation(cifar: CIFAR10DataModule) -> None:
    dm = cifar
    raw = dm.datasets["test"].images[:32]
    out = dm.tta_augment(augment.normalize(raw, dm.mean, dm.std), torch.Generator().manual_seed(3))
    expected = augment.normalize(dm.augment(raw, torch.Generator().manual_seed(3)), dm.mean, dm.std)
    # the same crops, flips and cutouts as in training, black padding included
    assert torch.allclose(out, expected, atol=1e-4)
    assert not torch.allclose(out, augment.normalize(raw, dm.mean, dm.std))


def test_random_resized_crop_of_the_whole_image_is_the_image() -> None:
    x = torch.rand(4, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    same = augment.random_resized_crop(x, 16, (1.0, 1.0), gen, ratio=(1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-5)
    crops = augment.random_resized_crop(x, 8, (0.08, 1.0), gen)
    assert crops.shape == (4, 3, 8, 8) and not torch.allclose(crops, x[..., ::2, ::2])


def _test_metrics(dm: CIFAR10DataModule, config: TTAConfig) -> dict[str, float]:
    torch.manual_seed(0)
    model = ImageClassifier("lenet5", num_classes=10, image_size=32, tta=config)
    trainer = L.Trainer(
        limit_test_batches=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    (metrics,) = trainer.test(model, datamodule=dm, verbose=False)
    return metrics


def test_test_logs_plain_and_tta_accuracy_in_one_run(cifar: CIFAR10DataModule) -> None:
    same = _test_metrics(cifar, TTAConfig(views="none"))
    assert same["test/tta_acc1"] == same["test/acc1"] and same["test/tta_acc5"] == same["test/acc5"]
    flipped = _test_metrics(cifar, TTAConfig(views="flip_translate"))
    assert flipped["test/acc1"] == same["test/acc1"]  # the plain result does not move
    assert {"test/tta_acc1", "test/tta_acc5"} <= set(flipped)
    assert flipped["test/tta_acc1"] != same["test/acc1"]
