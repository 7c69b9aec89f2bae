"""``cnn-bench gpu-check``: what only a GPU can show, in one short run (about 8 minutes).

Writes ``<out>/gpu.json`` and ``<out>/gpu.md`` (``docs/bench`` by default):

1. ``device``: the GPU, its compute capability, memory, bf16 support, torch and CUDA.
2. ``training``: images/s of one training step of airbench94 (32 px, batch 512),
   ResNet-18 (CIFAR, 32 px, batch 256) and ResNet-50 (224 px, batch 128) in 32-true,
   16-mixed and bf16-mixed, each with and without channels_last, and compiled with
   ``torch.compile`` in channels_last (the graphs compiled are counted: 0 would mean it
   ran eager); ResNet-50 is compiled once, in bf16-mixed, which keeps the run short.
3. ``lightning``: ``cnn-bench fit`` of the fast recipe for 30 steps in each precision on
   synthetic CIFAR-10 files: the loss is finite, and the host syncs per training step
   that ``torch.cuda.set_sync_debug_mode("warn")`` reports (expected: 0).
4. ``ddp``: with two or more GPUs, the same fit as two DDP processes, under a timeout.
5. ``time_to_94``: the fast recipe at airbench94's full widths on the real CIFAR-10 for
   10 epochs (within ``--budget`` seconds), then the test set with its test-time
   augmentation: the training seconds, and whether 94% was reached (when CIFAR-10 is in
   ``$CNN_BENCH_DATA`` or ``./data``).
6. ``imagenet_datapath``: ``ImageNetDataModule``'s training loader with every core as a
   DataLoader worker, on a generated tree of ImageNet-sized JPEGs: images/s, and the
   workers a ResNet-50 in bf16 (about 3,000 images/s on an H200) needs.

Without CUDA it says so in one line and exits 1; ``--allow-cpu --tiny`` runs every
section on the CPU with a tiny network (what the tests run).
"""

from __future__ import annotations

import argparse
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


# (network, image size, batch) of the training rows; on a CPU, the tiny check's one.
TRAINING = (("airbench94", 32, 512), ("resnet18", 32, 256), ("resnet50", 224, 128))
TINY_TRAINING = (("lenet5", 32, 8),)


def _variants(name: str) -> list[tuple[str, bool, bool]]:
    """(precision, channels_last, compile) of one network's rows: every precision eager in
    both layouts, compiled in channels_last (ResNet-50 in bf16-mixed only: each compile
    of it takes about a minute)."""
    rows = [(p, cl, False) for p in PRECISIONS for cl in (False, True)]
    compiled = ("bf16-mixed",) if name == "resnet50" else PRECISIONS
    return rows + [(p, True, True) for p in compiled]


def _training(tiny: bool) -> list[dict[str, Any]]:
    from cnn_bench.bench.throughput import _build, _compiled_graphs, train_step

    device = bench_device()
    rows = []
    for name, size, batch in TINY_TRAINING if tiny else TRAINING:
        for precision, channels_last, compiled in _variants(name):
            graphs = _compiled_graphs()
            model = _build(name, size, device, channels_last, fuse=False, compile_=compiled)
            step = train_step(model, precision, batch, size, channels_last, device)
            rate, steps = images_per_second(
                step, batch, device, warmup=3 if compiled else 1, min_seconds=0.05 if tiny else 1.5
            )
            rows.append(
                {
                    "model": name,
                    "image_size": size,
                    "batch_size": batch,
                    "precision": precision,
                    "channels_last": channels_last,
                    "compile": compiled,
                    "images_per_s": round(rate, 1),
                    "compiled_graphs": _compiled_graphs() - graphs,
                }
            )
            print(f"  training {rows[-1]}", file=sys.stderr, flush=True)
            del model, step
            if device.type == "cuda":
                torch.cuda.empty_cache()
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


# airbench94's own widths (the fast experiment narrows them for CPUs) and epoch count.
FULL_WIDTHS = "{widths: [24, 64, 256, 256]}"
EPOCHS_TO_94 = 10


def _time_to_94(budget: float, tiny: bool, root: Path) -> dict[str, Any]:
    from cnn_bench.bench import time_to_accuracy
    from cnn_bench.commands.bench import TINY_FIT

    if not (Path(default_data_dir()) / FOLDER / "test_batch").is_file():
        return {"skipped": f"CIFAR-10 not found in {default_data_dir()} (make data)"}
    full = ("--model.arch_kwargs", FULL_WIDTHS, "--trainer.max_epochs", str(EPOCHS_TO_94))
    result = time_to_accuracy.measure(budget, root, TINY_FIT if tiny else full)
    keep = ("train_s", "fit_wall_s", "steps", "epochs", "images_per_s", "test_acc1")
    record = {k: result.get(k) for k in keep} | {"budget_s": budget}
    accuracy = result.get("test_tta_acc1") or result["test_acc1"]
    record |= {
        "arch_kwargs": result.get("arch_kwargs"),
        "test_tta_acc1": result.get("test_tta_acc1"),
        "reached_94": accuracy >= 0.94,
        # The whole training time when the final accuracy (with TTA) is 94% or more.
        "seconds_to_94": result["train_s"] if accuracy >= 0.94 else None,
    }
    return record


def _imagenet(tiny: bool, root: Path) -> dict[str, Any]:
    try:
        from cnn_bench.bench import imagenet_path
    except ImportError:
        return {"skipped": "no ImageNet bench in this version"}
    return imagenet_path.gpu_check(root, tiny)


def _markdown(record: dict[str, Any]) -> str:
    lines = [f"# GPU check: {record['device'].get('gpu', 'no GPU')}", "", "```", record["command"]]
    lines += ["```", ""]
    if "gpu" not in record["device"]:
        lines += ["**No GPU: these numbers were measured on the CPU, as a check of the tool.**"]
        lines += [""]
    lines += ["| model | batch | precision | channels_last | compile | images/s | graphs |"]
    lines += ["| --- | ---: | --- | --- | --- | ---: | ---: |"]
    for r in record["training"]:
        lines.append(
            f"| {r['model']}@{r['image_size']} | {r['batch_size']} | {r['precision']} | "
            f"{r['channels_last']} | {r['compile']} | {r['images_per_s']:,.0f} | "
            f"{r['compiled_graphs']} |"
        )
    lines += ["", "| Lightning fit, precision | steps | loss | finite | host syncs (20 steps) |"]
    lines += ["| --- | ---: | ---: | --- | ---: |"]
    for r in record["lightning"]:
        lines.append(
            f"| {r['precision']} | {r['steps']} | {r['train_loss']} | {r['loss_finite']} | "
            f"{r['syncs_in_20_steps']} |"
        )
    lines += ["", f"DDP: `{json.dumps(record['ddp'])}`", ""]
    t = record["time_to_94"]
    if "skipped" in t:
        lines += [f"Time to 94%: skipped, {t['skipped']}", ""]
    else:
        tta = t.get("test_tta_acc1")
        lines += [
            f"Time to 94% (fast recipe, airbench94 widths {t.get('arch_kwargs')}): "
            f"{t['epochs']:.1f} epochs in {t['train_s']:.1f} s of training, test top-1 "
            f"{t['test_acc1']:.2%}"
            + (f", {tta:.2%} with TTA" if tta is not None else "")
            + (
                f": **94% in {t['seconds_to_94']:.1f} s**"
                if t["reached_94"]
                else ": **94% not reached**"
            ),
            "",
        ]
    lines += [f"ImageNet data path: `{json.dumps(record.get('imagenet_datapath'))}`", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cnn-bench gpu-check", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/bench"))
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
        record["imagenet_datapath"] = _imagenet(args.tiny, Path(tmp) / "imagenet")
    record["seconds"] = round(time.perf_counter() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "gpu.md").write_text(_markdown(record))
    print(f"cnn-bench gpu-check: wrote {args.out}/gpu.json and gpu.md", file=sys.stderr)
    return 0
