"""Callbacks that keep a run's record, in the run folder and in W&B, and never lose its work.

By concern: ``batchnorm`` (which batch norm statistics a test uses), ``run_record``
(the resolved config, throughput, ``metrics.json``), ``predictions`` (the test
confusion matrix and worst mistakes), ``prediction_writer`` (``predict``'s file and
table), ``resilience`` (non-finite stop, preemption, the last step of every run),
``progress`` (the progress bar). ``configs/trainer/default.yaml`` puts them in every run as
``cnn_bench.callbacks.<Name>``.
"""

from cnn_bench.callbacks.batchnorm import BatchNormTestMode
from cnn_bench.callbacks.prediction_writer import PredictionWriter
from cnn_bench.callbacks.predictions import TestPredictions
from cnn_bench.callbacks.progress import ProgressBar
from cnn_bench.callbacks.resilience import (
    NonFiniteLossError,
    SaveLastOnEnd,
    SaveOnPreemption,
    StopOnNonFinite,
)
from cnn_bench.callbacks.run_record import RunConfigCallback, RunSummary, Throughput

__all__ = [
    "BatchNormTestMode",
    "NonFiniteLossError",
    "PredictionWriter",
    "ProgressBar",
    "RunConfigCallback",
    "RunSummary",
    "SaveLastOnEnd",
    "SaveOnPreemption",
    "StopOnNonFinite",
    "TestPredictions",
    "Throughput",
]
