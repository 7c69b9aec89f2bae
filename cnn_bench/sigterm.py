"""SIGTERM outside the training loop: one line and a clean exit, never a silent exit 143.

Inside the loop ``SaveOnPreemption`` takes over (from Lightning's own handler, which
calls this one too) and saves ``last.ckpt`` at a step every DDP process agrees on.
Before it (imports, parsing the config, loading the data, building the model,
restoring a checkpoint) and after it, there is nothing unsaved to lose: the process
says so, requeues itself under SLURM as the preempted loop does, and exits 0.
Kept free of heavy imports so that it can be installed before torch and Lightning load.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType


def requeue_on_slurm() -> None:
    """Under SLURM, put this job back in the queue (rank 0 only: one request per job)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")) != "0":
        return
    try:
        subprocess.run(["scontrol", "requeue", job], check=False)
    except OSError as err:  # no scontrol on this node: say so instead of a traceback
        print(f"cnn-bench: warning: could not requeue SLURM job {job}: {err}", file=sys.stderr)


def _stop(signum: int, frame: FrameType | None) -> None:
    if signal.getsignal(signal.SIGTERM) is not _stop:
        return  # Lightning's handler, which calls this one too, stops the loop itself
    print(
        "cnn-bench: stopped by SIGTERM outside the training loop: nothing unsaved was lost. "
        "Continue with the same command plus --ckpt_path last",
        file=sys.stderr,
    )
    requeue_on_slurm()
    raise SystemExit(0)


def stop_cleanly_on_sigterm() -> None:
    """From now on, SIGTERM outside Lightning's training loop ends the process in one line."""
    signal.signal(signal.SIGTERM, _stop)
