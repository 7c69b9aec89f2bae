"""Configs the parser reads but a run cannot use: sizes of zero or below, a negative epoch
count, a value the data gives, an unknown init scheme or architecture keyword, config files
that are empty, not a mapping or not YAML. Each ends before training in one line naming
the option (or file) and the value, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cnn_bench.cli import cli
from tests.conftest import run_cli
from tests.data.image_trees import make_tree
from tests.hostile.one_line import error_line

REPO = Path(__file__).resolve().parents[2]
LENET = REPO / "configs/experiment/lenet5_cifar10.yaml"
IMAGENET = REPO / "configs/experiment/resnet50_imagenet.yaml"
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
# Should a value ever be taken again, the run it starts is one step, not a whole recipe.
SHORT = ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "1"]
TIMEOUT = 120

# name -> (experiment, arguments, what the message says)
BAD_VALUES = {
    "batch_size_zero": (LENET, ["--data.batch_size", "0"], ['"data.batch_size"', "0 does"]),
    "batch_size_negative": (LENET, ["--data.batch_size", "-1"], ['"data.batch_size"', "-1"]),
    "max_epochs_negative": (LENET, ["--trainer.max_epochs", "-5"], ["max_epochs", "-5"]),
    # Given by the data; the parser's own words were "int | None is not callable".
    "model_image_size": (
        LENET,
        ["--model.image_size", "0"],
        ['"model.image_size" must be given via "data.image_size"'],
    ),
    "image_size_zero": (IMAGENET, ["--data.image_size", "0"], ['"data.image_size"', "0 does"]),
    # The DataModule's own check, which the parser used to wrap in its own error.
    "eval_resize_below_image_size": (
        IMAGENET,
        ["--data.eval_resize", "100"],
        ["eval_resize (100) must be at least image_size (224)"],
    ),
    "unknown_init": (LENET, ["--model.init", "orthogonal"], ['"model.init"', "orthogonal"]),
    "unknown_loss": (LENET, ["--model.loss", "hinge"], ['"model.loss"', "hinge"]),
    "unknown_arch_keyword": (
        LENET,
        ["--model.arch_kwargs", '{"widht": 2}'],
        ["'lenet5' takes no keyword 'widht'", "--model.arch_kwargs"],
    ),
    "label_smoothing_above_one": (
        LENET,
        ["--model.label_smoothing", "2"],
        ['"model.label_smoothing"', "ClosedUnitInterval: 2"],
    ),
    "ema_decay_above_one": (LENET, ["--model.ema_decay", "1.5"], ['"model.ema_decay"', "1.5"]),
    "weights_only_false": (LENET, ["--weights_only", "false"], ["--weights_only false"]),
}


@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_a_bad_value_is_refused_in_one_line(name: str, tmp_path: Path, cli_env: dict) -> None:
    experiment, args, said = BAD_VALUES[name]
    done = run_cli(
        ["fit", "--config", str(experiment), *QUIET, *SHORT, *args],
        cwd=tmp_path,
        env=cli_env,
        timeout=TIMEOUT,
    )
    error_line(done, *said)
    assert not (tmp_path / "runs").exists()  # refused before the trainer wrote anything


# name -> (file content, what the message says after the file's name)
BAD_FILES = {
    "empty": ("", "is empty"),
    "a_list": ("- model\n- data\n", "holds a list, not a mapping"),
    "syntax_error": ("model:\n  arch: [lenet5\n", "is not valid YAML at line 3, column 1"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_config_file_is_named_in_one_line(name: str, tmp_path: Path, cli_env: dict) -> None:
    content, said = BAD_FILES[name]
    config = tmp_path / f"{name}.yaml"
    config.write_text(content)
    done = run_cli(
        ["fit", "--config", str(LENET), "--config", str(config), *QUIET, *SHORT],
        cwd=tmp_path,
        env=cli_env,
        timeout=TIMEOUT,
    )
    error_line(done, f"config {config} {said}")


def test_fit_help_lists_the_init_schemes(tmp_path: Path) -> None:
    done = run_cli(["fit", "--help"], cwd=tmp_path, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kaiming_normal_fan_out" in done.stdout


def test_checked_values_reach_the_run_as_plain_numbers(tmp_path: Path, cifar_root: Path) -> None:
    """The parser's PositiveInt is an int subclass that yaml writes as a Python object and
    weights-only loading refuses: none may reach hyper-parameters, loggers or checkpoints."""
    make_tree(tmp_path / "imagenet", train_per_class=4)
    runs = [
        ["--config", str(LENET), "--data.data_dir", str(cifar_root), "--data.test_size", "100"],
        ["--config", str(IMAGENET), "--data.data_dir", str(tmp_path), "--data.image_size", "32"],
    ]
    for args in runs:
        run = cli([*args, "--data.batch_size", "8", "--model.label_smoothing", "0.1"], run=False)
        data = run.datamodule
        numbers = {
            "image_size": data.image_size,
            "batch_size": getattr(data, "batch_size", 8),
            "test_size": getattr(data, "test_size", 100),
            **run.model.hparams,
        }
        yaml.safe_dump(numbers)  # a subclass of int or float raises RepresenterError
