"""A reader that leaves early (``cnn-bench study NAME --dry_run | head -1``) ends the
command quietly, as ``ls | head`` does: no BrokenPipeError traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "words",
    [["study", "double_descent", "--dry_run"], ["models"]],
)
def test_a_closed_pipe_is_not_a_traceback(words):
    process = subprocess.Popen(
        [sys.executable, "-m", "cnn_bench.cli", *words],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The reader goes before the first line is written (imports take seconds).
    process.stdout.close()
    stderr = process.stderr.read()
    process.wait(timeout=120)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr[-2000:]
    assert process.returncode == 1
