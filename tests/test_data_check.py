"""`cnn-bench data-check`: what it reports about a tree, and its exit status."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cnn_bench.commands.data_check import main
from tests.conftest import run_cli
from tests.data.image_trees import CLASSES, awkward_files, broken_files, make_tree


def test_reports_classes_sizes_and_every_unreadable_file(tmp_path: Path, capsys) -> None:
    tree = make_tree(tmp_path / "imagenet")
    assert main([str(tree), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    first = 12 + len(awkward_files())  # the readable files of the first class
    assert f"{tree / 'train'}: 3 classes, {first + 24} readable images" in out
    assert f"  {CLASSES[0]}  {first:>7}" in out and f"  {CLASSES[1]}  {12:>7}" in out
    assert f"{tree / 'val'}: 3 classes, 12 readable images" in out
    # sizes of the generated JPEGs are 24..79 pixels a side
    assert "image size (width x height): min 24 x " in out
    for name in broken_files():
        assert f"{tree / 'train' / CLASSES[0] / name}: " in out
    assert "empty.JPEG: empty file" in out
    assert ".hidden" not in out and "labels.csv" not in out
    # README.txt, labels.csv and .hidden.JPEG; hidden folders are not even entered
    assert "ignored: 3 hidden files or files that are not images by their name" in out
    assert out.strip().splitlines()[-1] == f"NOT USABLE: 3 unreadable files in {tree / 'train'}"


def test_a_clean_tree_passes_and_one_split_can_be_checked(tmp_path: Path, capsys) -> None:
    tree = make_tree(tmp_path / "imagenet", broken=False)
    assert main([str(tree), "--workers", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        "OK: 2 splits, 3 classes, every image readable"
    )
    assert main([str(tree / "val")]) == 0
    assert "OK: 1 split, 3 classes" in capsys.readouterr().out


def test_classes_that_differ_or_have_no_images_are_unusable(tmp_path: Path, capsys) -> None:
    tree = make_tree(tmp_path / "imagenet", broken=False)
    shutil.rmtree(tree / "val" / CLASSES[2])
    (tree / "train" / "n09999999").mkdir()
    (tree / "train" / "n09999999" / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    assert main([str(tree)]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("NOT USABLE: 1 unreadable files")
    assert "1 classes without a readable image in" in last and "n09999999" in last
    assert f"the classes of {tree / 'val'} differ from {tree / 'train'}" in last
    assert "2 missing (n01484850, n09999999)" in last


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_not_a_tree_is_a_one_line_error(tmp_path: Path, capsys, where: str) -> None:
    path = tmp_path / where
    if where == "empty":
        path.mkdir()
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnn-bench data-check: error: ") and err.count("\n") == 1


def test_the_command_on_the_cifar10_jpeg_test_split(cifar_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        ["data-check", str(cifar_root / "cifar10-jpeg" / "test"), "--workers", "2"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "10 classes, 10,000 readable images" in result.stdout
    assert "  airplane      1,000" in result.stdout and "  truck         1,000" in result.stdout
    assert "min 32 x 32, median 32 x 32, max 32 x 32" in result.stdout
