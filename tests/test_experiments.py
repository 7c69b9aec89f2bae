"""Every experiment config runs: one fast_dev_run training and validation step each, on the
real CIFAR-10 copy or on a generated ImageNet-layout tree, through the CLI as a user runs it."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from torch import nn

from cnn_bench.cli import cli, resolved_config
from cnn_bench.models import create_model, list_models, model_entry
from tests.conftest import REPO
from tests.data.image_trees import make_tree

EXPERIMENTS = sorted((REPO / "configs" / "experiment").glob("*.yaml"))
BEFORE_RECIPES = yaml.safe_load(
    (Path(__file__).parent / "experiments_before_recipes.yaml").read_text()
)
SMALL = [
    "--trainer.fast_dev_run",
    "true",
    "--trainer.logger",
    "false",
    "--trainer.accelerator",
    "cpu",
    "--trainer.devices",
    "1",
]


def resolved(*args: str) -> dict[str, Any]:
    """The config ``cnn-bench fit ARGS`` would run with, less the files it came from."""

    def values(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: values(v) for k, v in node.items() if k not in ("config", "__path__")}
        return node

    return values(resolved_config(list(args)))


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_tree(root / "imagenet", train_per_class=6, val_per_class=2, awkward=False, broken=False)
    return root


def test_every_network_has_an_experiment() -> None:
    names = {p.stem.rsplit("_", 1)[0] for p in EXPERIMENTS}
    for family in (
        "lenet5",
        "mlp",
        "alexnet",
        "vgg16_bn",
        "nin",
        "googlenet",
        "resnet18",
        "resnet50",
        "resnetv2_50",
        "resnext29_32x4d",
        "seresnet18",
    ):
        assert family in names, f"no configs/experiment/{family}_*.yaml"


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_runs_one_step(
    config: Path, tmp_path: Path, cifar_root: Path, imagenet_root: Path
) -> None:
    args = ["fit", "--config", str(config), *SMALL, "--trainer.default_root_dir", str(tmp_path)]
    image_tree = "ImageNetDataModule" in resolved("--config", str(config))["data"]["class_path"]
    if image_tree:
        # A small image size keeps an ImageNet network's step quick on a CPU; 96 pixels
        # still selects the ImageNet variant of every network.
        args += [
            "--data.data_dir",
            str(imagenet_root),
            "--data.image_size",
            "96",
            "--data.eval_resize",
            "110",
            "--data.val_per_class",
            "1",
            "--data.batch_size",
            "2",
            "--data.eval_batch_size",
            "2",
            "--data.num_workers",
            "0",
            "--data.folder",
            "imagenet",
            "--data.test_split",
            "val",
        ]
    else:
        args += [
            "--data.data_dir",
            str(cifar_root),
            "--data.batch_size",
            "4",
            "--data.eval_batch_size",
            "4",
        ]
    run = cli(args)
    trainer = run.trainer
    assert trainer.global_step == 1
    assert {"train/loss", "val/acc1"} <= set(trainer.callback_metrics)
    assert run.model.hparams.num_classes == run.datamodule.num_classes


@pytest.mark.parametrize("name", sorted(BEFORE_RECIPES))
def test_experiment_resolves_as_before_recipes(name: str, tmp_path: Path) -> None:
    """An experiment composed from a recipe gives the very config its complete file gave."""
    before = dict(BEFORE_RECIPES[name])
    if isinstance(before["data"], str):  # ../data/<name>.yaml, relative to the experiment
        before["data"] = str(REPO / "configs" / "experiment" / before["data"])
    complete = tmp_path / f"{name}.yaml"
    complete.write_text(yaml.safe_dump(before))
    now = resolved("--config", str(REPO / "configs" / "experiment" / f"{name}.yaml"))
    assert now == resolved("--config", str(complete))


def test_configs_follow_the_papers_where_the_notes_say_so() -> None:
    def read(name: str) -> dict:
        return resolved("--config", str(REPO / "configs/experiment" / f"{name}.yaml"))

    def weight_decay(name: str) -> float:
        return read(name)["model"]["optimizer"]["init_args"]["weight_decay"]

    assert weight_decay("nin_cifar10") == 1e-5
    assert weight_decay("vgg16_bn_imagenet") == 5e-4
    assert read("alexnet_imagenet")["model"]["arch_kwargs"]["lrn"] is True
    # vgg13_bn_cifar10 says how many weight layers it has, and that number is right.
    vgg13 = create_model("vgg13_bn", num_classes=10, image_size=32)
    layers = sum(isinstance(m, nn.Conv2d | nn.Linear) for m in vgg13.modules())
    header = (REPO / "configs/experiment/vgg13_bn_cifar10.yaml").read_text().split("\nconfig:")[0]
    assert f"{layers} weight layers" in header and "13-layer" not in header


def _make_train(*make_args: str) -> list[str]:
    """The ``cnn-bench fit`` arguments ``make train`` runs (printed by ``make -n``)."""
    shown = subprocess.run(
        ["make", "-n", "-s", "train", *make_args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = [w for w in shown.stdout.splitlines() if "cnn-bench fit " in w]
    return shlex.split(line.split("cnn-bench fit ", 1)[1])


def _configs(args: list[str]) -> list[Path]:
    return [REPO / b for a, b in zip(args, args[1:], strict=False) if a == "--config"]


@pytest.mark.parametrize("name", list_models())
def test_make_train_has_a_config_for_every_model(name: str) -> None:
    variants = model_entry(name).variants
    for data in [d for d, v in (("cifar10", "cifar"), ("imagenet", "imagenet")) if v in variants]:
        args = _make_train(f"MODEL={name}", f"DATA={data}")
        (config,) = _configs(args)
        assert config.is_file(), config
        if config.parent.name == "recipe":
            assert args[args.index("--model.arch") + 1] == name
            assert args[args.index("--experiment") + 1] == f"{name}_{data}"
        else:
            assert config == REPO / "configs" / "experiment" / f"{name}_{data}.yaml"


def test_make_train_runs_a_model_without_an_experiment_on_the_recipe(
    tmp_path: Path, cifar_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not (REPO / "configs" / "experiment" / "vgg11_cifar10.yaml").exists()
    args = _make_train("MODEL=vgg11")
    assert _configs(args) == [REPO / "configs" / "recipe" / "cifar10_cosine.yaml"]
    monkeypatch.chdir(REPO)  # make's paths are relative to the checkout
    run = cli(
        [
            "fit",
            *args,
            *SMALL,
            "--trainer.default_root_dir",
            str(tmp_path),
            "--data.data_dir",
            str(cifar_root),
            "--data.batch_size",
            "4",
            "--data.eval_batch_size",
            "4",
        ]
    )
    assert run.model.hparams.arch == "vgg11" and run.trainer.global_step == 1
    assert run.config.fit.experiment == "vgg11_cifar10"
    # The recipe's schedule, not a default one.
    assert type(run.trainer.lr_scheduler_configs[0].scheduler).__name__ == "WarmupCosineLR"
