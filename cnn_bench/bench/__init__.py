"""Benchmarks behind ``cnn-bench bench``: each section measures and returns numbers."""
