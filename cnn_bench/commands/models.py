"""``cnn-bench models``: every registered network with its size and cost.

One row per (model, variant): parameters with the variant's usual head (10 classes for
CIFAR, 1000 for ImageNet) and multiply-adds of one forward pass at the native
resolution (batch 1). Models are built on the meta device, so the table costs no
memory or arithmetic; ``torch.utils.flop_counter`` counts the matmuls and convolutions
(2 FLOPs per multiply-add), and we report multiply-adds as torchvision's docs do.
"""

from __future__ import annotations

import argparse
import csv
import io

import torch

from cnn_bench.models import create_model, list_models, model_entry
from cnn_bench.models.macs import count_macs
from cnn_bench.models.registry import NATIVE_SIZE

NUM_CLASSES = {"cifar": 10, "imagenet": 1000}
COLUMNS = ("model", "family", "variant", "input", "params_m", "gmacs")
HEADERS = {
    "model": "model",
    "family": "family",
    "variant": "variant",
    "input": "input",
    "params_m": "params (M)",
    "gmacs": "GMACs (multiply-adds)",
}


def measure(name: str, variant: str) -> dict:
    """Parameters and multiply-adds of one variant, computed on the meta device."""
    size = NATIVE_SIZE[variant]
    with torch.device("meta"):
        model = create_model(name, NUM_CLASSES[variant], image_size=size).eval()
        x = torch.empty(1, 3, size, size)
    return {
        "model": name,
        "family": model_entry(name).family,
        "variant": variant,
        "input": size,
        "params": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model, x),
    }


def model_table(pattern: str = "*") -> list[dict]:
    """One dict per registered (model, variant) matching ``pattern``.

    Keys: model, family, variant, input (pixels), params (count), macs (multiply-adds).
    """
    return [
        measure(name, variant)
        for name in list_models(pattern)
        for variant in model_entry(name).variants
    ]


def _cells(row: dict) -> dict[str, str]:
    return {
        "model": row["model"],
        "family": row["family"],
        "variant": row["variant"],
        "input": f"{row['input']}x{row['input']}",
        "params_m": f"{row['params'] / 1e6:.2f}",
        "gmacs": f"{row['macs'] / 1e9:.3f}",
    }


def render(rows: list[dict], fmt: str) -> str:
    cells = [_cells(r) for r in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(
            out,
            fieldnames=["model", "family", "variant", "input", "params", "macs"],
            lineterminator="\n",
        )
        writer.writeheader()
        writer.writerows({k: r[k] for k in writer.fieldnames} for r in rows)
        return out.getvalue()
    header = [HEADERS[c] for c in COLUMNS]
    body = [[c[k] for k in COLUMNS] for c in cells]
    numeric = {"params_m", "gmacs"}
    if fmt == "md":
        align = ["---:" if c in numeric else "---" for c in COLUMNS]
        lines = [header, align, *body]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(COLUMNS))]

    def line(values: list[str]) -> str:
        cells = zip(values, widths, COLUMNS, strict=True)
        return "  ".join(v.rjust(w) if c in numeric else v.ljust(w) for v, w, c in cells).rstrip()

    return "\n".join([line(header), *(line(r) for r in body)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cnn-bench models",
        description="List every registered model with its parameters and multiply-adds "
        "at native resolution (CIFAR 32x32 with 10 classes, ImageNet 224x224 with 1000).",
    )
    parser.add_argument("--format", choices=("table", "md", "csv"), default="table")
    parser.add_argument("--pattern", default="*", help="shell-style name filter, e.g. 'resnet*'")
    args = parser.parse_args(argv)
    rows = model_table(args.pattern)
    if not rows:
        parser.error(f"no registered model matches {args.pattern!r}")
    print(render(rows, args.format), end="")
    return 0
