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
from cnn_bench.models.macs import count_macs, layer_table
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


def render_layers(name: str, size: int) -> str:
    """The per-layer table of one network at ``size`` pixels: what the chapter's conv
    arithmetic gives (output side ``(n + 2p - k) / s + 1``, parameters per layer)."""
    variant = "cifar" if size < NATIVE_SIZE["imagenet"] // 2 else "imagenet"
    with torch.device("meta"):
        model = create_model(name, NUM_CLASSES[variant], image_size=size).eval()
        x = torch.empty(1, 3, size, size)
    rows = layer_table(model, x)
    header = ["layer", "type", "output", "params", "MACs"]
    body = [
        [
            r["name"],
            r["type"],
            "x".join(map(str, r["shape"][1:])),
            f"{r['params']:,}",
            f"{r['macs']:,}",
        ]
        for r in rows
    ]
    total_params = sum(p.numel() for p in model.parameters())
    body.append(["total", "", "", f"{total_params:,}", f"{count_macs(model, x):,}"])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(values: list[str]) -> str:
        cells = zip(values, widths, range(len(values)), strict=True)
        return "  ".join(v.rjust(w) if i >= 3 else v.ljust(w) for v, w, i in cells).rstrip()

    title = f"{name} at {size}x{size}, {NUM_CLASSES[variant]} classes ({variant} variant)"
    return "\n".join([title, line(header), *(line(r) for r in body)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cnn-bench models",
        description="List every registered model with its parameters and multiply-adds "
        "at native resolution (CIFAR 32x32 with 10 classes, ImageNet 224x224 with 1000).",
    )
    parser.add_argument("--format", choices=("table", "md", "csv"), default="table")
    parser.add_argument("--pattern", default="*", help="shell-style name filter, e.g. 'resnet*'")
    parser.add_argument("arch", nargs="?", help="with --layers: the network to break down")
    parser.add_argument(
        "--layers", action="store_true", help="each layer's output shape, parameters and MACs"
    )
    parser.add_argument("--size", type=int, help="input side for --layers (default: native)")
    args = parser.parse_args(argv)
    if args.layers or args.arch:
        if not (args.layers and args.arch):
            parser.error("give a network and --layers: cnn-bench models ARCH --layers")
        if args.arch not in list_models("*"):
            parser.error(f"no registered model {args.arch!r} (cnn-bench models lists them)")
        size = args.size or NATIVE_SIZE[model_entry(args.arch).variants[0]]
        if size < 1:
            parser.error("--size must be at least 1")
        try:
            print(render_layers(args.arch, size), end="")
        except (RuntimeError, ValueError) as err:  # e.g. an input too small for the network
            parser.error(f"{args.arch} at {size}x{size}: {str(err).splitlines()[0]}")
        return 0
    rows = model_table(args.pattern)
    if not rows:
        parser.error(f"no registered model matches {args.pattern!r}")
    print(render(rows, args.format), end="")
    return 0
