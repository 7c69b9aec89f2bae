"""The configs ship with the package: a wheel holds every YAML file of configs/, so an
installed cnn-bench keeps its defaults; without them the CLI says so in one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cnn_bench import config_files
from cnn_bench.cli import main
from tests.conftest import REPO


def test_a_wheel_holds_every_config(tmp_path: Path) -> None:
    # Built from a copy, so the checkout gets no build/ folder; the link stays a link.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "cnn_bench", source / "cnn_bench", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "configs", source / "configs", ignore=ignore)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         str(source), "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("cnn_bench-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("cnn_bench/configs/")}
    expected = {
        f"cnn_bench/configs/{p.relative_to(REPO / 'configs')}"
        for p in (REPO / "configs").rglob("*.yaml")
    }
    assert "cnn_bench/configs/trainer/default.yaml" in expected
    assert shipped == expected


def test_missing_defaults_are_one_line_not_a_run_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(config_files, "DEFAULT_CONFIG", tmp_path / "trainer" / "default.yaml")
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(REPO / "configs/experiment/lenet5_cifar10.yaml")])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "default config" in err and "missing" in err
