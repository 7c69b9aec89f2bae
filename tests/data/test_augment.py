"""Batched augmentation does what it says, to every image, keeping labels aligned."""

import torch

from cnn_bench.data import augment


def _images(n: int = 16) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )


def test_random_crop_is_a_translation_of_the_padded_image() -> None:
    x = _images()
    out = augment.random_crop(x, padding=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4,) * 4)
    shifts = set()
    for i in range(len(x)):
        found = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.equal(out[i], padded[i, :, dy : dy + 32, dx : dx + 32])
        ]
        assert found, f"image {i} is not a crop of its own padded image"
        shifts.add(found[0])
    assert len(shifts) > 1, "every image got the same crop: the crops are not per image"


def test_random_flip_mirrors_about_half_and_keeps_the_rest() -> None:
    x = _images(256)
    out = augment.random_flip(x, generator=torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert bool((flipped | kept).all())
    assert 80 < int(flipped.sum()) < 176


def test_cutout_zeroes_one_square_per_image() -> None:
    x = torch.full((64, 3, 32, 32), 255, dtype=torch.uint8)
    out = augment.cutout(x, 8, generator=torch.Generator().manual_seed(0))
    zeros = (out == 0).all(dim=1)  # n, h, w
    for mask in zeros:
        ys, xs = mask.nonzero(as_tuple=True)
        assert len(ys) > 0
        # one axis-aligned rectangle, at most 8x8 (clipped at the borders)
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert h <= 8 and w <= 8 and len(ys) == h * w


def test_same_generator_seed_gives_the_same_augmentation() -> None:
    x = _images()
    a = augment.random_crop(x, 4, torch.Generator().manual_seed(5))
    b = augment.random_crop(x, 4, torch.Generator().manual_seed(5))
    c = augment.random_crop(x, 4, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_datamodule_augments_training_batches_only_and_keeps_labels(cifar_root) -> None:
    import lightning as L

    from cnn_bench.data import CIFAR10DataModule
    from cnn_bench.module import ImageClassifier

    dm = CIFAR10DataModule(data_dir=str(cifar_root), batch_size=64, val_size=1000)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_steps=1, barebones=True)
    trainer.strategy.connect(ImageClassifier("lenet5"))
    dm.trainer = trainer
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (64, 3, 32, 32)
    index = dm.datasets["train"].labels
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= set(index.tolist())

    trainer.state.stage = "validate"
    plain, plain_labels = dm.on_after_batch_transfer((images, labels), 0)
    assert plain.dtype == torch.float32 and torch.equal(plain_labels, labels)
    expected = (images.float() - dm.mean[None, :, None, None]) / dm.std[None, :, None, None]
    assert torch.allclose(plain, expected)

    trainer.state.stage = "train"
    augmented, aug_labels = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(aug_labels, labels)
    assert not torch.allclose(augmented, plain)


def test_random_crop_flip_is_the_crop_then_the_flip_drawn_the_same_way() -> None:
    # The reference, one image at a time, with the draws in the documented order:
    # vertical shifts, horizontal shifts, then the mirror coin.
    x = _images(64)
    for padding in (1, 2, 4):
        g = torch.Generator().manual_seed(padding)
        dy = torch.randint(0, 2 * padding + 1, (64, 1), generator=g)[:, 0]
        dx = torch.randint(0, 2 * padding + 1, (64, 1), generator=g)[:, 0]
        mirrored = torch.rand(64, generator=g) < 0.5
        padded = torch.nn.functional.pad(x, (padding,) * 4)
        expected = torch.stack(
            [
                (lambda c: c.flip(2) if m else c)(padded[i, :, y : y + 32, z : z + 32])
                for i, (y, z, m) in enumerate(zip(dy, dx, mirrored, strict=True))
            ]
        )
        out = augment.random_crop_flip(x, padding, torch.Generator().manual_seed(padding))
        assert torch.equal(out, expected)
        # Without the flip it is random_crop, draw for draw.
        crop = augment.random_crop(x, padding, torch.Generator().manual_seed(padding))
        assert torch.equal(
            augment.random_crop_flip(x, padding, torch.Generator().manual_seed(padding), False),
            crop,
        )
        assert 10 < int(mirrored.sum()) < 54


def test_normalize_is_the_textbook_formula_and_leaves_its_input_alone() -> None:
    mean, std = torch.tensor([125.3, 123.0, 113.9]), torch.tensor([63.0, 62.1, 66.7])
    x = _images()
    textbook = (x.float() - mean[None, :, None, None]) / std[None, :, None, None]
    out = augment.normalize(x, mean, std)
    assert out.dtype == torch.float32 and torch.equal(out, textbook)
    # Float input (test-time augmentation passes one) is copied, never changed in place.
    floats = x.float()
    kept = floats.clone()
    assert torch.equal(augment.normalize(floats, mean, std), textbook)
    assert torch.equal(floats, kept)
