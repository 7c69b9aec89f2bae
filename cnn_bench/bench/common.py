"""What every benchmark shares: the machine it ran on, timing with spread, the output files."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cnn_bench.files import write_text_atomic


def cpu_model() -> str:
    """The processor's marketing name (``/proc/cpuinfo``), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Everything a reader needs to compare a number with their own machine's."""
    import lightning
    import torchvision

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Other work on the machine slows every number; a ratio measured interleaved does not move.
        "load_average_1min": load_average(),
        # Unset, OpenMP threads spin while they wait; on a machine with more busy threads than
        # cores that makes small tensor operations many times slower (PASSIVE avoids it).
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gpu": gpu,
        "device": "cuda" if gpu else "cpu",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
    }


def bench_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pinned_device_args() -> tuple[str, ...]:
    """CLI arguments that run a benchmark's Lightning run on one device of the bench's
    kind: with ``devices: auto`` a machine with several GPUs would start DDP, which
    re-launches the whole ``cnn-bench bench`` once per extra GPU."""
    kind = bench_device().type
    return ("--trainer.accelerator", "gpu" if kind == "cuda" else kind, "--trainer.devices", "1")


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a clock reading means the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock() -> tuple[float, float]:
    """Wall-clock and this process's CPU seconds. On a machine shared with other work the
    wall clock measures the neighbours too; the CPU seconds of the process do not."""
    return time.perf_counter(), time.process_time()


def child_pids() -> set[int]:
    """The processes this one started and that still run (DataLoader workers), from /proc."""
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # ended while being read
            if ppid == me:
                found.add(int(entry.name))
    return found


def cpu_seconds(pids: set[int] | frozenset[int] = frozenset()) -> float:
    """CPU seconds of this process (every thread) and of the processes ``pids``."""
    total, tick = time.process_time(), os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime, in ticks
    return total


def rates(
    step: Callable[[], Any],
    batch_size: int,
    device: torch.device,
    pids: set[int] | frozenset[int] = frozenset(),
    min_steps: int = 5,
    min_seconds: float = 1.0,
    warmup: int = 1,
) -> tuple[float, float]:
    """Steady-state images per second and per CPU-second of ``step``, counting the CPU
    time of this process and of ``pids``, its DataLoader workers. Per CPU-second, a
    pipeline is measured by the work it does, whatever share of the cores other work on
    the machine left it. The ``warmup`` calls before the clock starts take the batches
    that workers made ahead (``prefetch_factor`` per worker), whose CPU time was spent
    before the window."""
    for _ in range(warmup):
        step()
    synchronize(device)
    steps, start, cpu = 0, time.perf_counter(), cpu_seconds(pids)
    while steps < min_steps or time.perf_counter() - start < min_seconds:
        step()
        steps += 1
    synchronize(device)
    wall, cpu = time.perf_counter() - start, cpu_seconds(pids) - cpu
    return steps * batch_size / wall, steps * batch_size / max(cpu, 1e-9)


def images_per_second(
    step: Callable[[], Any],
    batch_size: int,
    device: torch.device,
    warmup: int = 1,
    min_steps: int = 3,
    min_seconds: float = 1.0,
) -> tuple[float, int]:
    """Steady-state images/s of ``step``: after ``warmup`` calls, run at least ``min_steps`` and
    at least ``min_seconds``. Returns (images/s, steps timed)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    steps, start = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - start < min_seconds:
        step()
        steps += 1
        if device.type == "cuda" and steps % 10 == 0:
            synchronize(device)
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - start), steps


def load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def busy(machine: dict[str, Any]) -> str | None:
    """Why a section's numbers are not to be trusted, or None: the 1-minute load average
    was above the core count at its start or its end (other work shared the cores)."""
    cores = machine.get("cpu_cores") or 1
    loads = {
        "start": machine.get("load_average_1min"),
        "end": machine.get("load_average_1min_end"),
    }
    high = {when: load for when, load in loads.items() if load is not None and load > cores}
    if not high:
        return None
    said = ", ".join(f"{load} at the {when}" for when, load in high.items())
    return f"the machine was busy: 1-minute load average {said}, on {cores} cores"


def write_json(path: Path, section: str, machine: dict[str, Any], results: dict[str, Any]) -> None:
    """The section's record. The load is read again now: a section whose machine was busy
    at either end is marked ``valid: false`` with the reason (and so is its Markdown)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = {**machine, "load_average_1min_end": load_average()}
    reason = busy(machine)
    record = {"section": section, "valid": reason is None, "machine": machine, "results": results}
    if reason:
        record["invalid_because"] = reason
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
