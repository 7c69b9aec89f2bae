"""`cnn-bench export`: every family's network in every format gives the checkpoint's logits
(fp32, < 1e-4), and the file's description says how to feed it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnn_bench.commands.export import FORMATS, export_network
from cnn_bench.models import create_model
from cnn_bench.models.fuse import fuse_bn
from cnn_bench.models.registry import NATIVE_SIZE
from tests.conftest import REPO, run_cli

# One network of each family and block kind at CIFAR size, and the ImageNet variants small
# enough to write three times in a test (VGG and AlexNet at 224 weigh 0.25-0.5 GB each:
# the same layers as their CIFAR variants, exported here).
CIFAR = ["airbench94", "alexnet", "lenet5", "mlp", "nin", "resnet18", "resnet50_v1"]
CIFAR += ["resnetv2_18", "seresnet18", "vgg11_bn"]
CASES = [(name, "cifar") for name in CIFAR]
CASES += [("resnet18", "imagenet"), ("googlenet", "imagenet"), ("resnext50_32x4d", "imagenet")]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_exported_logits_match(tmp_path: Path, name: str, variant: str, fmt: str) -> None:
    size = NATIVE_SIZE[variant]
    torch.manual_seed(0)
    network = create_model(name, num_classes=10, image_size=size).eval()
    with torch.no_grad():  # batch statistics that are not the identity, so folding matters
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    network = fuse_bn(network) if name.startswith("resnet") else network
    difference = export_network(network, fmt, tmp_path / f"net{FORMATS[fmt]}", size, batch=3)
    assert difference < 1e-4


def test_export_command_writes_the_file_and_its_description(tmp_path: Path, cli_env: dict) -> None:
    fit = run_cli(
        [
            "fit",
            "--config",
            str(REPO / "configs/experiment/lenet5_cifar10.yaml"),
            "--trainer.max_steps",
            "3",
            "--trainer.limit_val_batches",
            "1",
        ],
        cwd=tmp_path,
        env=cli_env,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    (ckpt,) = tmp_path.rglob("last.ckpt")
    out = tmp_path / "lenet5.onnx"
    done = run_cli(
        ["export", "--ckpt_path", str(ckpt), "--format", "onnx", "--out", str(out)],
        cwd=tmp_path,
        env=cli_env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(f"cnn-bench export: wrote {out}")
    info = json.loads(Path(f"{out}.json").read_text())
    assert info["classes"][:2] == ["airplane", "automobile"] and info["image_size"] == 32
    assert info["name"] == "cifar10" and len(info["mean"]) == 3 and info["std"][0] > 1
    assert info["max_abs_logit_difference"] < 1e-4

    missing = run_cli(["export", "--ckpt_path", str(tmp_path / "nope.ckpt")], cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"cnn-bench: error: no checkpoint at {tmp_path / 'nope.ckpt'}"
    ]
