"""`cnn-bench predict --images`: your own image files through a trained checkpoint, with
exactly the test split's preprocessing, into a CSV; broken files named and skipped."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_bench.data import augment
from cnn_bench.data.cifar10 import CLASSES, FOLDER
from cnn_bench.data.safe_pickle import load_pickle
from cnn_bench.predict import load_classifier, predict_images
from tests.conftest import REPO, clean_env, run_cli


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, cifar_root: Path) -> Path:
    root = tmp_path_factory.mktemp("fit")
    fit = run_cli(
        [
            "fit",
            "--config",
            str(REPO / "configs/experiment/lenet5_cifar10.yaml"),
            "--trainer.max_steps",
            "30",
            "--trainer.limit_val_batches",
            "1",
        ],
        cwd=root,
        env=clean_env(root, CNN_BENCH_DATA=str(cifar_root)),
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    (path,) = root.rglob("last.ckpt")
    return path


@pytest.fixture(scope="module")
def test_images(cifar_root: Path) -> tuple[np.ndarray, list[int]]:
    batch = load_pickle(cifar_root / FOLDER / "test_batch")
    data = batch[b"data"][:24].reshape(-1, 3, 32, 32)
    return data, list(batch[b"labels"][:24])


def _write_pngs(folder: Path, images: np.ndarray, labels: list[int] | None) -> list[Path]:
    paths = []
    for i, image in enumerate(images):
        where = folder / CLASSES[labels[i]] if labels else folder
        where.mkdir(parents=True, exist_ok=True)
        paths.append(where / f"{i:03d}.png")
        Image.fromarray(image.transpose(1, 2, 0)).save(paths[-1])  # lossless
    return paths


def test_predict_images_equals_the_test_pipeline(
    tmp_path: Path, checkpoint: Path, test_images: tuple[np.ndarray, list[int]]
) -> None:
    images, _ = test_images
    paths = _write_pngs(tmp_path, images, None)
    model, data = load_classifier(checkpoint)
    rows = predict_images(model, data, paths, top_k=10, batch_size=7)
    # What `cnn-bench test` computes for the same images: the module on the DataModule's
    # normalisation of the uint8 batch.
    x = augment.normalize(
        torch.from_numpy(images), torch.tensor(data["mean"]), torch.tensor(data["std"])
    )
    with torch.no_grad():
        expected = model(x).softmax(dim=1)
    for row, probs in zip(rows, expected, strict=True):
        got = dict(row["top"])
        assert list(got) == [CLASSES[i] for i in probs.argsort(descending=True)]
        assert [got[c] for c in CLASSES] == pytest.approx(probs.tolist(), abs=1e-6)


def test_predict_command_on_folders_and_files(
    tmp_path: Path, checkpoint: Path, test_images: tuple[np.ndarray, list[int]]
) -> None:
    images, labels = test_images
    _write_pngs(tmp_path / "mine" / "by_class", images[:12], labels[:12])
    flat = _write_pngs(tmp_path / "mine" / "flat", images[12:], None)
    (tmp_path / "mine" / "flat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    out = tmp_path / "out.csv"
    done = run_cli(
        [
            "predict",
            "--ckpt_path",
            str(checkpoint),
            "--images",
            str(tmp_path / "mine" / "by_class"),
            str(tmp_path / "mine" / "flat"),
            str(flat[0]),
            "--top_k",
            "3",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert any(f"skipped {tmp_path / 'mine' / 'flat' / 'broken.jpg'}" in line for line in lines)
    assert lines[-1].startswith(f"cnn-bench predict: 26 images -> {out}; top-1 ")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 26
    # the class subfolder is the label; a folder that is not a class gives none
    for r in rows:
        folder = Path(r["file"]).parent.name
        assert r["label"] == (folder if folder in CLASSES else "")
    assert sum(bool(r["label"]) for r in rows) == 12
    assert all(
        r["class1"] in CLASSES and 0 < float(r["prob1"]) <= 1 for r in rows if not r["error"]
    )
    assert [r["file"] for r in rows if r["error"]] == [
        str(tmp_path / "mine" / "flat" / "broken.jpg")
    ]


def test_predict_command_refuses_in_one_line(tmp_path: Path, checkpoint: Path) -> None:
    for args, message in (
        (["--ckpt_path", str(tmp_path / "none.ckpt"), "--images", str(tmp_path)], "no checkpoint"),
        (["--ckpt_path", str(checkpoint), "--images", str(tmp_path / "x.txt")], "not an image"),
        (["--ckpt_path", str(checkpoint), "--images", str(tmp_path)], "no image files"),
    ):
        done = run_cli(["predict", *args], cwd=tmp_path)
        assert done.returncode == 2
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("cnn-bench: error: ") and message in line


def test_predict_on_the_test_split_writes_every_prediction(
    tmp_path: Path, checkpoint: Path, cifar_root: Path, test_images: tuple[np.ndarray, list[int]]
) -> None:
    """`cnn-bench predict --ckpt_path X` (Lightning's loop) writes predictions.csv in its run
    folder: one row per test image, in order, with its true label and the network's top-5
    classes and probabilities, the same as the network computes for those images."""
    done = run_cli(
        [
            "predict",
            "--config",
            str(REPO / "configs/experiment/lenet5_cifar10.yaml"),
            "--ckpt_path",
            str(checkpoint),
            "--data.eval_batch_size",
            "16",
            "--trainer.limit_predict_batches",
            "2",
        ],
        cwd=tmp_path,
        env=clean_env(tmp_path, CNN_BENCH_DATA=str(cifar_root)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (out,) = tmp_path.rglob("predictions.csv")
    assert out.parent.parent.name == "cnn_bench"  # <save_dir>/cnn_bench/<predict run id>/
    assert f"cnn-bench predict: 32 images -> {out}" in done.stdout
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 32
    images, labels = test_images
    model, data = load_classifier(checkpoint)
    x = augment.normalize(
        torch.from_numpy(images), torch.tensor(data["mean"]), torch.tensor(data["std"])
    )
    with torch.no_grad():
        expected = model(x).softmax(dim=1)
    for row, label, probs in zip(rows, labels, expected, strict=False):  # the first 24
        assert row["label"] == CLASSES[label]
        top = probs.topk(5)
        assert [row[f"class{i}"] for i in range(1, 6)] == [CLASSES[c] for c in top.indices]
        assert [float(row[f"prob{i}"]) for i in range(1, 6)] == pytest.approx(
            top.values.tolist(), abs=1e-4
        )


def test_predict_images_with_flip_views_and_an_ensemble(
    tmp_path: Path, checkpoint: Path, test_images: tuple[np.ndarray, list[int]]
) -> None:
    """`--tta flip` averages each image's probabilities with its mirror's; `--ensemble`
    averages over checkpoints (one twin: the same probabilities)."""
    images, _ = test_images
    _write_pngs(tmp_path / "flat", images[:8], None)
    model, data = load_classifier(checkpoint)
    x = augment.normalize(
        torch.from_numpy(images[:8]), torch.tensor(data["mean"]), torch.tensor(data["std"])
    )
    with torch.no_grad():
        flip = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
    for extra in (["--tta", "flip"], ["--tta", "flip", "--ensemble", str(checkpoint)]):
        out = tmp_path / f"{len(extra)}.csv"
        done = run_cli(
            ["predict", "--ckpt_path", str(checkpoint), "--images", str(tmp_path / "flat")]
            + ["--top_k", "10", "--out", str(out), *extra],
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        rows = sorted(csv.DictReader(out.open()), key=lambda r: r["file"])
        for row, probs in zip(rows, flip, strict=True):
            got = {row[f"class{i}"]: float(row[f"prob{i}"]) for i in range(1, 11)}
            assert [got[c] for c in CLASSES] == pytest.approx(probs.tolist(), abs=1e-4)
    other = tmp_path / "other.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    state["data"]["classes"] = [f"c{i}" for i in range(10)]
    torch.save(state, other)
    done = run_cli(
        ["predict", "--ckpt_path", str(checkpoint), "--images", str(tmp_path / "flat")]
        + ["--ensemble", str(other)],
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "was trained on other classes" in done.stderr
    assert "Traceback" not in done.stderr
