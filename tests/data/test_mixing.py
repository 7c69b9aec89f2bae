"""Mixup and CutMix labels checked against the pixels they come with.

Every image is one flat colour per class, so the mixing weight of each output image can be
read back from its pixels (mixup: where its colour lies between the two classes' colours;
cutmix: the share of its pixels that kept the first colour), and its soft label must be
that weight on its own class and the rest on its partner's.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cnn_bench.data import ImageNetDataModule, augment
from tests.data.image_trees import make_tree

COLOURS = torch.tensor([[250, 10, 10], [10, 250, 10], [10, 10, 250]])  # one per class


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "imagenet")


def _module(tree: Path, **alphas: float) -> ImageNetDataModule:
    return ImageNetDataModule(data_dir=str(tree.parent), folder=tree.name, **alphas)


def _batch(n: int = 15) -> tuple[torch.Tensor, torch.Tensor]:
    # A multiple of the class count: no image is paired with one of its own class.
    labels = torch.arange(n) % len(COLOURS)
    images = COLOURS[labels][:, :, None, None].expand(n, 3, 32, 32).to(torch.uint8)
    return images.contiguous(), labels


def _mixed(tree: Path, **alphas: float) -> tuple[ImageNetDataModule, torch.Tensor, ...]:
    dm = _module(tree, **alphas)
    assert dm.num_classes == len(COLOURS)
    dm.trainer = SimpleNamespace(training=True)
    images, labels = _batch()
    torch.manual_seed(0)
    mixed, soft = dm.on_after_batch_transfer((images, labels), 0)
    colours = augment.normalize(COLOURS[:, :, None, None].to(torch.uint8), dm.mean, dm.std)[
        :, :, 0, 0
    ]
    return dm, labels, mixed, soft, colours


def _check_labels(labels: torch.Tensor, soft: torch.Tensor, weight: torch.Tensor) -> None:
    """Image i keeps ``weight[i]`` of itself and takes the rest from its partner."""
    partner = labels.roll(1)  # torchvision's MixUp and CutMix pair each image with the previous
    expected = torch.zeros_like(soft)
    expected[torch.arange(len(labels)), labels] += weight
    expected[torch.arange(len(labels)), partner] += 1 - weight
    torch.testing.assert_close(soft, expected, atol=2e-3, rtol=0)


def test_mixup_labels_carry_the_weight_seen_in_the_pixels(tree: Path) -> None:
    dm, labels, mixed, soft, colours = _mixed(tree, mixup_alpha=0.8)
    own, other = colours[labels], colours[labels.roll(1)]
    pixel = mixed[:, :, 0, 0]
    assert torch.allclose(mixed, pixel[:, :, None, None].expand_as(mixed))  # still flat
    weight = ((pixel - other) * (own - other)).sum(1) / ((own - other) ** 2).sum(1)
    assert 0 < float(weight.min()) < 1 and weight.std() > 0  # really mixed, not 0/1
    _check_labels(labels, soft, weight)


def test_cutmix_labels_carry_the_area_kept(tree: Path) -> None:
    dm, labels, mixed, soft, colours = _mixed(tree, cutmix_alpha=1.0)
    own = colours[labels][:, :, None, None]
    kept = (mixed - own).abs().amax(dim=1) < 1e-4  # pixels still of the image's own colour
    weight = kept.float().mean(dim=(1, 2))
    assert float(weight.min()) < 1  # a box was pasted
    _check_labels(labels, soft, weight)


def test_no_mixing_outside_training(tree: Path) -> None:
    dm = _module(tree, mixup_alpha=0.8)
    dm.trainer = SimpleNamespace(training=False)
    images, labels = _batch()
    plain, hard = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(hard, labels)
    torch.testing.assert_close(plain, augment.normalize(images, dm.mean, dm.std))


@pytest.mark.parametrize("alphas", [{"mixup_alpha": 0.8}, {"cutmix_alpha": 1.0}])
def test_a_label_shift_would_show(tree: Path, alphas: dict) -> None:
    """The check above is sharp: the same labels one row off fail it."""
    dm, labels, mixed, soft, colours = _mixed(tree, **alphas)
    with pytest.raises(AssertionError):
        _check_labels(labels, soft.roll(1, dims=0), torch.full((len(labels),), 0.5))
