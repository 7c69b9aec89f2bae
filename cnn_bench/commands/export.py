"""``cnn-bench export``: a trained network as ONNX, TorchScript or a torch.export program,
checked against the checkpoint it came from.

The network is exported in eval mode (batch norm optionally folded into the preceding
convolutions) for images that are already normalised; ``<out>.json`` beside it records
the input size, channels, mean and std (0-255 scale), evaluation resize and class
names, so that the file can classify images without cnn_bench. After writing, a batch of
images runs through the exported file and through the checkpoint's network; the largest
absolute difference of their logits is printed and recorded (fp32: expect < 1e-4).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported_program": ".pt2"}
EXTRA = "pip install -e '.[export]'"


class ExportError(RuntimeError):
    """An export that cannot be done; the message says why and what to do."""


def _network(checkpoint: Path, fuse: bool) -> tuple[nn.Module, dict[str, Any]]:
    from cnn_bench.checkpoint import read_checkpoint
    from cnn_bench.models.fuse import fuse_bn
    from cnn_bench.module import ImageClassifier

    model = ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    data = read_checkpoint(checkpoint, mmap=True).get("data")
    hp = model.hparams
    info = {
        "arch": hp.arch,
        "num_classes": hp.num_classes,
        "in_chans": hp.in_chans,
        "image_size": hp.image_size,
        **(data or {}),
    }
    network = model.model.eval()
    return (fuse_bn(network) if fuse else network), info


def _onnx(network: nn.Module, example: Tensor, out: Path) -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise ExportError(f"ONNX export needs onnx and onnxruntime: {EXTRA}") from err
    try:
        torch.onnx.export(
            network, (example,), str(out), input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )  # fmt: skip
    except ImportError as err:
        raise ExportError(f"ONNX export needs the onnx package: {EXTRA}") from err
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def _torchscript(network: nn.Module, example: Tensor, out: Path) -> Any:
    with warnings.catch_warnings():  # torch deprecates TorchScript; asked for, it is written
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(network, example)
        traced.save(str(out))
        return torch.jit.load(str(out))


def _exported_program(network: nn.Module, example: Tensor, out: Path) -> Any:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(network, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(out))
    return torch.export.load(str(out)).module()


def export_network(
    network: nn.Module, fmt: str, out: Path, image_size: int, in_chans: int = 3, batch: int = 4
) -> float:
    """Write an eval-mode ``network`` to ``out`` as ``fmt``; returns the largest absolute
    difference between its logits and the file's on a seeded random batch."""
    out.parent.mkdir(parents=True, exist_ok=True)
    shape = (in_chans, image_size, image_size)
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exported = {"onnx": _onnx, "torchscript": _torchscript}.get(fmt, _exported_program)(
            network, example, out
        )
        # Another batch size than the traced one: the file must not have baked it in.
        images = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
        return float((network(images) - exported(images)).abs().max())


def export(
    checkpoint: Path, fmt: str, out: Path | None = None, fuse: bool = False, batch: int = 4
) -> dict[str, Any]:
    """Write the checkpoint's network as ``fmt`` and its description as ``<out>.json``;
    returns the description with the parity of a seeded random batch."""
    network, info = _network(checkpoint, fuse)
    out = out or checkpoint.with_suffix(FORMATS[fmt])
    size, chans = info["image_size"] or 224, info["in_chans"] or 3
    difference = export_network(network, fmt, out, size, chans, batch)
    info |= {
        "format": fmt,
        "file": str(out),
        "fused_bn": fuse,
        "input": "float32 N x C x H x W, (pixel - mean) / std with pixels on the 0-255 scale",
        "max_abs_logit_difference": difference,
    }
    Path(f"{out}.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cnn-bench export", description=__doc__.split("\n")[0])
    p.add_argument("--ckpt_path", type=Path, required=True, help="a cnn-bench checkpoint")
    p.add_argument("--format", choices=sorted(FORMATS), default="onnx")
    p.add_argument("--out", type=Path, help="the file to write (default: beside the checkpoint)")
    p.add_argument("--fuse-bn", action="store_true", help="fold batch norm into convolutions")
    p.add_argument("--batch", type=int, default=4, help="images in the parity check")
    args = p.parse_args(argv)
    if not args.ckpt_path.is_file():
        print(f"cnn-bench: error: no checkpoint at {args.ckpt_path}", file=sys.stderr)
        return 2
    try:
        info = export(args.ckpt_path, args.format, args.out, args.fuse_bn, args.batch)
    except ExportError as err:
        print(f"cnn-bench: error: {err}", file=sys.stderr)
        return 2
    print(
        f"cnn-bench export: wrote {info['file']} ({args.format}) and {info['file']}.json; "
        f"largest logit difference from the checkpoint: {info['max_abs_logit_difference']:.2e}",
        file=sys.stderr,
    )
    return 0
