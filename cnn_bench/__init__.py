"""cnn_bench: train, test and benchmark the classic convolutional networks."""

__version__ = "0.1.0"
