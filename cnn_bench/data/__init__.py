"""One LightningDataModule per data set, batched augmentation, test-time augmentation."""

from cnn_bench.data.cifar10 import CIFAR10DataModule
from cnn_bench.data.common import DataError

__all__ = ["CIFAR10DataModule", "DataError"]
