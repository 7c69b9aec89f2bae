"""``cnn-bench models``: the table of every registered network."""

from __future__ import annotations

import csv
import io

import pytest
import torchvision

from cnn_bench.commands.models import main, model_table


def test_table_rows_per_variant_with_reference_numbers() -> None:
    rows = {(r["model"], r["variant"]): r for r in model_table("resnet50")}
    assert set(rows) == {("resnet50", "imagenet"), ("resnet50", "cifar")}
    imagenet = rows["resnet50", "imagenet"]
    reference = torchvision.models.resnet50()
    assert imagenet["params"] == sum(p.numel() for p in reference.parameters())
    assert imagenet["input"] == 224 and imagenet["family"] == "resnet"
    # torchvision documents ResNet-50 as 4.09 "GFLOPS", which are multiply-adds.
    assert imagenet["macs"] / 1e9 == pytest.approx(4.09, abs=0.01)
    cifar = rows["resnet50", "cifar"]
    assert cifar["input"] == 32
    assert cifar["params"] == imagenet["params"] - 990 * 2049 - 64 * 3 * (49 - 9)


def test_csv_lists_every_match(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--format", "csv", "--pattern", "vgg1?"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["model"], r["variant"]) for r in rows] == [
        (f"vgg{d}", v) for d in (11, 13, 16, 19) for v in ("imagenet", "cifar")
    ]
    assert int(rows[0]["params"]) == 132_863_336


def test_markdown_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--format", "md", "--pattern", "lenet5"])
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| model |") and "GMACs (multiply-adds)" in md[0]
    assert md[1].startswith("| --- |") and len(md) == 3
    main(["--pattern", "nin"])
    text = capsys.readouterr().out.splitlines()
    assert text[1].split()[:4] == ["nin", "nin", "cifar", "32x32"]


def test_no_match_is_an_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--pattern", "nothing*"])
    assert info.value.code == 2
