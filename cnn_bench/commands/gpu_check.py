"""``cnn-bench gpu-check``: what only a GPU can show, in one short run (under 10 minutes).

Writes ``<out>/gpu_check.json`` and ``<out>/README.md``:

1. ``device``: the GPU, its compute capability, memory, bf16 support, torch and CUDA.
2. ``training``: images/s of one training step (airbench94 at 32 px, batch 512) in
   32-true, 16-mixed and bf16-mixed, each with and without channels_last and
   ``torch.compile`` (with the graphs compiled: 0 would mean it ran eager).
3. ``lightning``: ``cnn-bench fit`` of the fast recipe for 30 steps in each precision on
   synthetic CIFAR-10 files: the loss is finite, and the host syncs per training step
   that ``torch.cuda.set_sync_debug_mode("warn")`` reports (expected: 0).
4. ``ddp``: with two or more GPUs, the same fit as two DDP processes, under a timeout.
5. ``time_to_94``: the fast recipe on the real CIFAR-10 within ``--budget`` seconds, then
   the test set (when CIFAR-10 is in ``$CNN_BENCH_DATA`` or ``./data``).

Without CUDA it says so in one line and exits 1; ``--allow-cpu --tiny`` runs every
section on the CPU with a tiny network (what the tests run).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnn_bench.bench.common import bench_device, images_per_second, machine_info
from cnn_bench.config_files import CONFIG_DIR
from cnn_bench.data.cifar10 import FOLDER
from cnn_bench.data.common import default_data_dir

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")
STEPS = 30  # of the Lightning run; syncs are counted on steps 5..24 (no logging step)


def _device() -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "count": torch.cuda.device_count(),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "bf16": torch.cuda.is_bf16_supported(),
            "cudnn": torch.backends.cudnn.version(),
        }
    return info


def _training(tiny: bool) -> list[dict[str, Any]]:
    from cnn_bench.bench.throughput import _build, _compiled_graphs, train_step

    device = bench_device()
    name, batch = ("lenet5", 8) if tiny else ("airbench94", 512)
    rows = []
    for precision, channels_last, compiled in itertools.product(
        PRECISIONS, (False, True), (False, True)
    ):
        graphs = _compiled_graphs()
        model = _build(name, 32, device, channels_last, fuse=False, compile_=compiled)
        step = train_step(model, precision, batch, 32, channels_last, device)
        rate, steps = images_per_second(
            step, batch, device, warmup=3 if compiled else 1, min_seconds=0.05 if tiny else 2.0
        )
        rows.append(
            {
                "model": name,
                "batch_size": batch,
                "precision": precision,
                "channels_last": channels_last,
                "compile": compiled,
                "images_per_s": round(rate, 1),
                "compiled_graphs": _compiled_graphs() - graphs,
            }
        )
        print(f"  training {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def synthetic_cifar(root: Path, per_batch: int = 1000) -> Path:
    """CIFAR-10 files of random pixels (the real format): speed and syncs, not accuracy."""
    rng = np.random.default_rng(0)
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def _fit_args(tiny: bool, root: Path) -> list[str]:
    config = "lenet5_cifar10" if tiny else "fast_cifar10"
    return [
        "--config",
        str(CONFIG_DIR / "experiment" / f"{config}.yaml"),
        "--data.data_dir",
        str(root),
        "--data.val_size",
        "500",
        "--trainer.max_steps",
        str(STEPS),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.log_every_n_steps",
        "25",
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        str(root / "runs"),
    ]


def _lightning(tiny: bool, root: Path) -> list[dict[str, Any]]:
    import lightning as L

    from cnn_bench.cli import cli

    class SyncWarnings(L.Callback):
        """``set_sync_debug_mode("warn")`` on steps 5..24: each host sync warns once."""

        def __init__(self) -> None:
            self.syncs = 0
            self._catcher: Any = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 5 and torch.cuda.is_available():
                self._catcher = warnings.catch_warnings(record=True)
                self._records = self._catcher.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == 24 and self._catcher is not None:
                torch.cuda.set_sync_debug_mode("default")
                self._catcher.__exit__(None, None, None)
                self.syncs = sum("synchroniz" in str(w.message) for w in self._records)
                self._catcher = None

    rows = []
    for precision in PRECISIONS:
        probe = SyncWarnings()
        start = time.perf_counter()
        run = cli(["--trainer.precision", precision, *_fit_args(tiny, root)], run=False)
        run.trainer.callbacks.append(probe)
        run.trainer.fit(run.model, datamodule=run.datamodule)
        loss = run.trainer.callback_metrics.get("train/loss")
        rows.append(
            {
                "precision": precision,
                "steps": run.trainer.global_step,
                "train_loss": None if loss is None else round(float(loss), 4),
                "loss_finite": loss is not None and bool(torch.isfinite(loss)),
                "syncs_in_20_steps": probe.syncs,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(f"  lightning {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def _ddp(tiny: bool, root: Path) -> dict[str, Any]:
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return {"skipped": "fewer than 2 GPUs"}
    command = [sys.executable, "-m", "cnn_bench.cli", "fit", *_fit_args(tiny, root)]
    command += ["--config", str(CONFIG_DIR / "trainer" / "ddp.yaml"), "--trainer.devices", "2"]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"returncode": None, "error": "hung for 300 s (a collective mismatch?)"}
    return {
        "returncode": done.returncode,
        "seconds": round(time.perf_counter() - start, 1),
        "stderr_tail": done.stderr[-1500:] if done.returncode else "",
    }


def _time_to_94(budget: float, tiny: bool, root: Path) -> dict[str, Any]:
    from cnn_bench.bench import time_to_accuracy
    from cnn_bench.commands.bench import TINY_FIT

    if not (Path(default_data_dir()) / FOLDER / "test_batch").is_file():
        return {"skipped": f"CIFAR-10 not found in {default_data_dir()} (make data)"}
    result = time_to_accuracy.measure(budget, root, TINY_FIT if tiny else ())
    keep = ("train_s", "fit_wall_s", "steps", "epochs", "images_per_s", "test_acc1", "val_acc1")
    return {k: result.get(k) for k in keep} | {"budget_s": budget}


def _markdown(record: dict[str, Any]) -> str:
    lines = [f"# GPU check: {record['device'].get('gpu', 'no GPU')}", "", "```", record["command"]]
    lines += ["```", "", "| precision | channels_last | compile | images/s | graphs |"]
    lines += ["| --- | --- | --- | ---: | ---: |"]
    for r in record["training"]:
        lines.append(
            f"| {r['precision']} | {r['channels_last']} | {r['compile']} | "
            f"{r['images_per_s']:.0f} | {r['compiled_graphs']} |"
        )
    lines += ["", "| Lightning fit, precision | steps | loss | finite | host syncs (20 steps) |"]
    lines += ["| --- | ---: | ---: | --- | ---: |"]
    for r in record["lightning"]:
        lines.append(
            f"| {r['precision']} | {r['steps']} | {r['train_loss']} | {r['loss_finite']} | "
            f"{r['syncs_in_20_steps']} |"
        )
    lines += ["", f"DDP: `{json.dumps(record['ddp'])}`", ""]
    lines += [f"Time to accuracy: `{json.dumps(record['time_to_94'])}`", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cnn-bench gpu-check", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/gpu_check"))
    p.add_argument("--budget", type=float, default=120, help="time-to-accuracy seconds")
    p.add_argument("--tiny", action="store_true", help="tiny network, few steps: checks the tool")
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no GPU")
    args = p.parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print(
            "cnn-bench gpu-check: error: no CUDA device here (torch "
            f"{torch.__version__}, CUDA {torch.version.cuda}); run it on a GPU machine",
            file=sys.stderr,
        )
        return 1
    os.environ.setdefault("WANDB_MODE", "offline")
    record: dict[str, Any] = {"command": " ".join(["cnn-bench", "gpu-check", *argv])}
    record["machine"], record["device"] = machine_info(), _device()
    print(f"cnn-bench gpu-check: {record['device']}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnn-bench-gpu-") as tmp:
        root = synthetic_cifar(Path(tmp) / "data", per_batch=200 if args.tiny else 1000)
        record["training"] = _training(args.tiny)
        record["lightning"] = _lightning(args.tiny, root)
        record["ddp"] = _ddp(args.tiny, root)
        record["time_to_94"] = _time_to_94(args.budget, args.tiny, Path(tmp) / "tta")
    record["seconds"] = round(time.perf_counter() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "README.md").write_text(_markdown(record))
    print(f"cnn-bench gpu-check: wrote {args.out}/gpu_check.json and README.md", file=sys.stderr)
    return 0
