"""Training subsets and label noise, for the small-sample and noisy-label studies.

Both are drawn from ``split_seed`` (the validation split's seed), not from the training
seed: every run of a study, whatever its seed, trains on the same images with the same
corrupted labels, so the spread over seeds measures the training alone. Each draws from
its own numpy stream (``[split_seed, stream]``), so changing one never moves the other.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cnn_bench.data.common import DataError

SUBSET_STREAM, NOISE_STREAM = 1, 2


def balanced_subset(labels: Tensor, size: int, num_classes: int, seed: int) -> Tensor:
    """Sorted indices of ``size`` examples, ``size // num_classes`` of each class and one
    more of ``size % num_classes`` classes chosen at random; a DataError when a class has
    too few examples."""
    if not 0 < size <= len(labels):
        raise DataError(f"train_subset must be between 1 and {len(labels)}, got {size}")
    rng = np.random.default_rng([seed, SUBSET_STREAM])
    per_class = np.full(num_classes, size // num_classes)
    per_class[rng.permutation(num_classes)[: size % num_classes]] += 1
    labels_np = labels.numpy()
    chosen = []
    for label, wanted in enumerate(per_class):
        members = np.flatnonzero(labels_np == label)
        if len(members) < wanted:
            raise DataError(
                f"train_subset={size} needs {wanted} images of class {label}, but the "
                f"training split has {len(members)}: lower train_subset or val_size"
            )
        chosen.append(rng.choice(members, size=wanted, replace=False))
    return torch.from_numpy(np.sort(np.concatenate(chosen))).long()


def noisy_labels(labels: Tensor, fraction: float, num_classes: int, seed: int) -> Tensor:
    """A copy of ``labels`` with exactly ``round(fraction * len(labels))`` of them, chosen
    at random, replaced by a different class drawn uniformly from the other classes."""
    if not 0.0 <= fraction <= 1.0:
        raise DataError(f"label_noise must be a fraction between 0 and 1, got {fraction}")
    rng = np.random.default_rng([seed, NOISE_STREAM])
    n = round(fraction * len(labels))
    changed = torch.from_numpy(rng.choice(len(labels), size=n, replace=False)).long()
    # A shift of 1..K-1 classes: never the true class, every other class equally likely.
    shift = torch.from_numpy(rng.integers(1, num_classes, size=n)).long()
    noisy = labels.clone()
    noisy[changed] = (labels[changed] + shift) % num_classes
    return noisy
