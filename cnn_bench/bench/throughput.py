"""Per-architecture throughput at native resolution: training and inference, every switch.

For each network: fp32 and reduced precision (bf16 autocast on a CPU, fp16 autocast with
loss scaling on a GPU, as Lightning's ``16-mixed``), channels_last off and on,
``torch.compile`` off and, when asked, on; inference also with BatchNorm folded into the
convolutions. Random inputs: the data path is measured on its own.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cnn_bench.bench.common import bench_device, images_per_second
from cnn_bench.models import create_model, fuse_bn

# Representative by default: the smallest, the speed-run network, the CIFAR workhorses.
# ImageNet sizes on a CPU take minutes each: ask for them (``resnet50@224``) or ``--all``.
DEFAULT_MODELS = ("lenet5@32", "airbench94@32", "resnet18@32", "vgg16_bn@32")


def reduced_precision(device: torch.device) -> str:
    """The mixed precision the GPU configs train with: bf16 where the device computes
    in it (CPUs, Ampere and newer GPUs), else fp16."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        return "16-mixed"
    return "bf16-mixed"


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "32-true":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def parse_model(spec: str) -> tuple[str, int]:
    """``name@size`` (``resnet50@224``); a bare name is CIFAR-sized."""
    name, _, size = spec.partition("@")
    return name, int(size or 32)


def _batch(batch: int, size: int, channels_last: bool, device: torch.device) -> tuple:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.randn(batch, 3, size, size, device=device).to(memory_format=memory_format)
    return images, torch.randint(0, 10, (batch,), device=device)


def inference_step(
    model: nn.Module,
    precision: str,
    batch: int,
    size: int,
    channels_last: bool,
    device: torch.device,
) -> Callable[[], None]:
    images, _ = _batch(batch, size, channels_last, device)
    model.eval()

    def infer() -> None:
        with torch.inference_mode(), _autocast(precision, device):
            model(images)

    return infer


def train_step(
    model: nn.Module,
    precision: str,
    batch: int,
    size: int,
    channels_last: bool,
    device: torch.device,
) -> Callable[[], None]:
    """One SGD step on a fixed random batch, with loss scaling under fp16."""
    images, labels = _batch(batch, size, channels_last, device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")

    def train() -> None:
        with _autocast(precision, device):
            output = model(images)
            loss = nn.functional.cross_entropy(
                output[0] if isinstance(output, tuple) else output, labels
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return train


COMPILE_BACKEND = "inductor"


def _compiled_graphs() -> int:
    """Graphs dynamo has compiled so far (its counter survives ``reset``)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _build(
    name: str, size: int, device: torch.device, channels_last: bool, fuse: bool, compile_: bool
) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10 if size <= 64 else 1000, image_size=size)
    if fuse:
        model = fuse_bn(model)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if not compile_:
        return model
    # A fresh dynamo per setting: otherwise each setting recompiles the same forward,
    # and past dynamo's recompile limit the rest silently run eager, timed as compiled.
    torch._dynamo.reset()
    return torch.compile(model, backend=COMPILE_BACKEND)


def measure(
    models: list[str],
    compile_: bool,
    min_seconds: float,
    batch_sizes: dict[int, int],
) -> dict[str, Any]:
    device = bench_device()
    precisions = ("32-true", reduced_precision(device))
    rows = []
    for spec in models:
        name, size = parse_model(spec)
        batch = batch_sizes.get(size, batch_sizes[max(batch_sizes)])
        settings = [
            (mode, precision, channels_last, compiled, fuse)
            for mode, precision, channels_last, compiled, fuse in itertools.product(
                ("training", "inference"),
                precisions,
                (False, True),
                (False, True) if compile_ else (False,),
                (False, True),
            )
            if not (fuse and mode == "training")  # folding BatchNorm is for inference only
        ]
        for mode, precision, channels_last, compiled, fuse in settings:
            graphs_before = _compiled_graphs()
            model = _build(name, size, device, channels_last, fuse, compiled)
            make_step = train_step if mode == "training" else inference_step
            step = make_step(model, precision, batch, size, channels_last, device)
            rate, steps = images_per_second(
                step,
                batch,
                device,
                warmup=2 if compiled else 1,
                min_steps=2,
                min_seconds=min_seconds,
            )
            rows.append(
                {
                    "model": name,
                    "image_size": size,
                    "batch_size": batch,
                    "mode": mode,
                    "precision": precision,
                    "channels_last": channels_last,
                    "compile": compiled,
                    "fuse_bn": fuse,
                    "images_per_s": rate,
                    "steps_timed": steps,
                    # 0 under compile would mean the timed steps ran eager.
                    "compiled_graphs": _compiled_graphs() - graphs_before,
                }
            )
    return {"device": str(device), "rows": rows}
