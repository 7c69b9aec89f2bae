"""What every refused input must look like from the shell: a non-zero exit, no traceback,
and one ``cnn-bench: error:`` line, the last on stderr, that names the cause."""

from __future__ import annotations

import subprocess


def error_line(done: subprocess.CompletedProcess, *said: str) -> str:
    """The one error line of a refused run; each of ``said`` must be in it."""
    stderr = done.stderr
    assert done.returncode == 2, f"exit {done.returncode}: {stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    # torch's own advice for a refused file; loading one with it could run code.
    assert "weights_only=False" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("cnn-bench: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr[-3000:]
    for words in said:
        assert words in errors[0], errors[0]
    return errors[0]
