"""One LightningDataModule per data set, batched augmentation, test-time augmentation."""

from cnn_bench.data.cifar10 import CIFAR10DataModule
from cnn_bench.data.common import DataError
from cnn_bench.data.imagefolder import ImageNetDataModule
from cnn_bench.data.mnist import MNISTDataModule

__all__ = ["CIFAR10DataModule", "DataError", "ImageNetDataModule", "MNISTDataModule"]
