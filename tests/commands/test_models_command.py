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


@pytest.mark.parametrize(
    ("arch", "size"),
    [("lenet5", 32), ("alexnet", 224), ("resnet18", 32), ("googlenet", 32), ("seresnet18", 32)],
)
def test_layers_add_up_to_the_network(arch: str, size: int) -> None:
    """Every parameter and every multiply-add of the network is in exactly one layer's row."""
    import torch

    from cnn_bench.models import create_model
    from cnn_bench.models.macs import count_macs, layer_table

    with torch.device("meta"):
        model = create_model(arch, 10 if size == 32 else 1000, image_size=size).eval()
        x = torch.empty(1, 3, size, size)
    rows = layer_table(model, x)
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
    assert sum(r["macs"] for r in rows) == count_macs(model, x)


def test_layers_of_alexnet_follow_the_conv_arithmetic(capsys: pytest.CaptureFixture[str]) -> None:
    """The chapter's numbers: conv1 (11x11, stride 4, padding 2) on 224 gives
    (224 + 4 - 11) // 4 + 1 = 55, with 64 x (3 x 11 x 11) + 64 parameters, and
    55 x 55 x 64 x 363 multiply-adds; fc6 holds 9216 x 4096 + 4096."""
    assert main(["alexnet", "--layers", "--size", "224"]) == 0
    lines = capsys.readouterr().out.splitlines()
    conv1 = next(line.split() for line in lines if line.startswith("features.0 "))
    assert conv1[2] == f"64x{(224 + 4 - 11) // 4 + 1}x55"
    assert conv1[3] == f"{64 * 3 * 11 * 11 + 64:,}" and conv1[4] == f"{55 * 55 * 64 * 363:,}"
    fc6 = next(line.split() for line in lines if line.startswith("classifier.1 "))
    assert fc6[3] == f"{9216 * 4096 + 4096:,}"
    assert (
        lines[-1].split()[1]
        == f"{sum(p.numel() for p in torchvision.models.alexnet().parameters()):,}"
    )


def test_layers_refuse_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["nosuchnet", "--layers"], "no registered model 'nosuchnet'"),
        (["lenet5"], "give a network and --layers"),
        (["alexnet", "--layers", "--size", "8"], "alexnet at 8x8: "),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
