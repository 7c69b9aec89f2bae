"""Every W&B sweep in ``configs/sweeps/`` runs: its first parameter set, turned into a
command line exactly as ``wandb agent`` does, is a valid ``cnn-bench fit``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from wandb.sdk.launch.sweeps import utils as sweep_utils

from tests.conftest import REPO, run_cli

SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
# Distributions whose first value is their lower bound.
BOUNDED = {"uniform", "int_uniform", "q_uniform", "log_uniform_values", "q_log_uniform_values"}


def first_parameter_set(parameters: dict[str, Any]) -> dict[str, Any]:
    chosen = {}
    for name, spec in parameters.items():
        if "value" in spec:
            chosen[name] = spec["value"]
        elif "values" in spec:
            chosen[name] = spec["values"][0]
        else:
            assert spec.get("distribution") in BOUNDED, f"{name}: no first value in {spec}"
            chosen[name] = spec["min"]
    return chosen


def agent_command(sweep: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The words after ``cnn-bench`` in the command the agent would start."""
    flags = sweep_utils.create_sweep_command_args(
        {"args": {name: {"value": value} for name, value in values.items()}}
    )["args"]
    words = []
    for word in sweep_utils.create_sweep_command(sweep["command"]):
        words += flags if word == "${args}" else [] if word == "${env}" else [word]
    assert words[0] == "cnn-bench", f"the sweep must drive cnn-bench, not {words[0]}"
    return words[1:]


def test_there_are_sweeps() -> None:
    names = {path.stem for path in SWEEPS}
    assert {"lenet5_cifar10_lr_wd_optimizer", "mlp_cifar10_width"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_first_parameter_set_runs(path: Path, tmp_path: Path, cli_env: dict) -> None:
    sweep = yaml.safe_load(path.read_text())
    assert sweep["metric"]["name"].startswith("val/")  # a metric every fit logs
    values = first_parameter_set(sweep["parameters"])
    args = agent_command(sweep, values)

    # The agent runs the command from the repository root (`make sweep`).
    printed = run_cli([*args, "--print_config"], cwd=REPO, env=cli_env)
    assert printed.returncode == 0, printed.stderr[-3000:]
    config = yaml.safe_load(printed.stdout)
    for name, value in values.items():
        node = config
        for key in name.split("."):
            node = node[key]
        assert node == value, f"{name} is {node} in the run's config, the sweep set {value}"

    fit = run_cli(
        [
            *args,
            "--trainer.fast_dev_run",
            "true",
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
        cwd=REPO,
        env=cli_env,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
