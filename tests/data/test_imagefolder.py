"""ImageNetDataModule on generated trees of awkward files and on the CIFAR-10 JPEG tree."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torchvision.transforms import v2

from cnn_bench.data import DataError, ImageNetDataModule, augment
from cnn_bench.data.cifar10 import CLASSES as CIFAR10_CLASSES
from cnn_bench.data.decode import UnreadableImage, decode_rgb
from cnn_bench.data.imagefolder import Skipped, UnreadableImageWarning
from tests.conftest import clean_env, run_cli
from tests.data.image_trees import (
    BLUE,
    CLASSES,
    RED,
    awkward_files,
    broken_files,
    make_tree,
    small_datamodule,
)
from tests.wandb_files import read_wandb_run

EXPERIMENT = Path(__file__).resolve().parents[2] / "configs/experiment/resnet50_imagenet.yaml"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "imagenet")


@pytest.fixture(scope="module")
def cifar_jpeg(cifar_root: Path) -> Path:
    tree = cifar_root / "cifar10-jpeg"
    if not (tree / "test").is_dir():
        pytest.fail(f"{tree} missing: prepare_cifar10.py DEST --jpeg writes it", pytrace=False)
    return tree


_module = small_datamodule


# -- decoding --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(awkward_files()))
def test_every_awkward_format_decodes_to_upright_rgb(tree: Path, name: str) -> None:
    image = decode_rgb(tree / "train" / CLASSES[0] / name)
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 48)
    top, bottom = image[:, 8, 24].tolist(), image[:, 24, 24].tolist()
    if name.startswith("gray"):  # no colour to keep: red is darker than blue in luma
        assert top[0] == top[1] == top[2] and bottom[0] == bottom[1] == bottom[2]
        assert abs(top[0] - 0.299 * RED[0] - 0.587 * RED[1] - 0.114 * RED[2]) < 6
    else:
        assert max(abs(a - b) for a, b in zip(top, RED, strict=True)) < 12, top
        assert max(abs(a - b) for a, b in zip(bottom, BLUE, strict=True)) < 12, bottom


@pytest.mark.parametrize("name", sorted(broken_files()))
def test_broken_files_raise_a_short_reason(tree: Path, name: str) -> None:
    with pytest.raises(UnreadableImage) as err:
        decode_rgb(tree / "train" / CLASSES[0] / name)
    reason = str(err.value)
    assert reason and "\n" not in reason and ".cpp" not in reason and len(reason) < 80


# -- classes and splits ----------------------------------------------------------------------
def test_classes_splits_and_ignored_files(tree: Path) -> None:
    dm = _module(tree)
    assert dm.num_classes == 3 and dm.classes == list(CLASSES) and dm.in_chans == 3
    dm.setup()
    train, val, test = (dm.datasets[s] for s in ("train", "val", "test"))
    # 12 JPEGs per class plus 11 awkward and 3 broken files in the first; hidden files,
    # hidden folders and other extensions are never listed.
    first_class = 12 + len(awkward_files()) + len(broken_files())
    assert len(train) + len(val) == first_class + 2 * 12
    assert all(not part.startswith(".") for f in train.files + val.files for part in f.parts[-2:])
    assert all(f.suffix != ".csv" for f in train.files)
    assert torch.bincount(torch.tensor(val.labels)).tolist() == [2, 2, 2]
    assert not set(train.files) & set(val.files)
    # labels are the folder's class index in every split
    for dataset in (train, val, test):
        assert all(
            CLASSES[label] == f.relative_to(tree).parts[1]
            for f, label in zip(dataset.files, dataset.labels, strict=True)
        )
    assert len(test) == 3 * 4


def test_the_validation_split_depends_only_on_its_seed(tree: Path) -> None:
    a, b, c = _module(tree), _module(tree), _module(tree, split_seed=1)
    torch.manual_seed(1)
    a.setup()
    torch.manual_seed(2)
    b.setup()
    c.setup()
    assert a.datasets["val"].files == b.datasets["val"].files
    assert a.datasets["val"].files != c.datasets["val"].files


def test_class_list_fixes_order_and_names(tree: Path, tmp_path: Path) -> None:
    names = {CLASSES[0]: "tench, Tinca tinca", CLASSES[1]: "goldfish", CLASSES[2]: "great white"}
    order = [CLASSES[2], CLASSES[0], CLASSES[1]]
    class_list = tmp_path / "classes.txt"
    class_list.write_text("".join(f"{c} {names[c]}\n" for c in order))
    dm = _module(tree, class_list=str(class_list))
    assert dm.folders == order and dm.classes == [names[c] for c in order]
    dm.setup()
    test = dm.datasets["test"]
    assert all(
        order[label] == f.parent.name for f, label in zip(test.files, test.labels, strict=True)
    )
    class_list.write_text(f"{CLASSES[0]}\n{CLASSES[1]}\nn99999999\n")
    with pytest.raises(
        DataError,
        match=r"1 not in class list .*\(n01484850\).*1 missing "
        r"\(n99999999\)",
    ):
        _ = _module(tree, class_list=str(class_list)).num_classes


def test_a_split_with_other_classes_is_an_error_naming_them(tree: Path, tmp_path: Path) -> None:
    copy = tmp_path / "imagenet"
    shutil.copytree(tree, copy)
    shutil.rmtree(copy / "val" / CLASSES[1])
    (copy / "val" / "n04000000").mkdir()
    with pytest.raises(
        DataError,
        match=r"val differ.*1 not in .*\(n04000000\).*1 missing "
        r"\(n01443537\)",
    ):
        _module(copy).setup()


def test_missing_tree_and_small_classes_say_what_to_do(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a folder. Lay the data out as"):
        _ = _module(tmp_path / "nowhere").num_classes
    with pytest.raises(DataError, match="too few to hold out val_per_class=20"):
        _module(tree, val_per_class=20).setup()


# -- batches ---------------------------------------------------------------------------------
def _skip_warnings(record: list) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, UnreadableImageWarning)]


def test_batches_and_the_epoch_with_broken_files(tree: Path) -> None:
    dm = _module(tree, num_workers=2, batch_size=4)
    dm.setup()
    train = dm.datasets["train"]
    assert len(train) % 4 == 0  # no partial batch is dropped: every file is read
    with pytest.warns(UnreadableImageWarning) as record:
        batches = list(dm.train_dataloader())
    assert all(x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32) for x, _ in batches)
    assert all(y.dtype == torch.int64 and len(y) == len(x) <= 4 for x, y in batches)
    # Every readable training image came through once, the broken ones were named,
    # and the pass ended with their count.
    broken_in_train = [f for f in train.files if f.name in broken_files()]
    assert broken_in_train
    assert sum(len(y) for _, y in batches) == len(train) - len(broken_in_train)
    messages = _skip_warnings(record)
    for f in broken_in_train:
        assert any(str(f) in m for m in messages), f
    assert messages[-1] == (
        f"train pass 1: skipped {len(broken_in_train)} unreadable image files"
        " (named above); `cnn-bench data-check` lists them all"
    )
    val, test = next(iter(dm.val_dataloader()))[0], next(iter(dm.test_dataloader()))[0]
    assert val.shape[1:] == (3, 32, 32) and test.shape[1:] == (3, 40, 40)


def test_eval_batches_are_sharded_without_padding(tree: Path) -> None:
    dm = _module(tree, eval_batch_size=5)
    dm.setup()
    seen = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
        seen += [label for _, labels in dm.test_dataloader() for label in labels.tolist()]
    assert sorted(seen) == sorted(dm.datasets["test"].labels)


def test_mixup_and_cutmix_give_soft_labels_in_training_only(tree: Path) -> None:
    dm = _module(tree, mixup_alpha=0.8, cutmix_alpha=1.0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    dm.trainer = SimpleNamespace(training=True)
    mixed, soft = dm.on_after_batch_transfer((images, labels), 0)
    assert soft.shape == (6, 3) and torch.allclose(soft.sum(1), torch.ones(6))
    assert not torch.equal(soft.argmax(1), labels) or (soft.max(1).values < 1).any()
    dm.trainer = SimpleNamespace(training=False)
    plain, hard = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(hard, labels)
    assert torch.allclose(plain, augment.normalize(images, dm.mean, dm.std))


# -- the CIFAR-10 JPEG tree ------------------------------------------------------------------
def test_cifar10_jpeg_tree(cifar_jpeg: Path) -> None:
    dm = ImageNetDataModule(
        data_dir=str(cifar_jpeg.parent),
        folder=cifar_jpeg.name,
        test_split="test",
        image_size=32,
        eval_resize=36,
        val_per_class=500,
        num_workers=0,
    )
    assert dm.classes == list(CIFAR10_CLASSES)
    dm.setup()
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sizes == {"train": 45_000, "val": 5_000, "test": 10_000, "predict": 10_000}
    assert dm.name == "cifar10-jpeg"  # runs and metrics.json name the tree, not ImageNet
    # Evaluation order is a fixed shuffle, not class by class: limit_val_batches and
    # limit_test_batches measure every class.
    for split in ("val", "test"):
        first = torch.bincount(torch.tensor(dm.datasets[split].labels[:500]), minlength=10)
        assert first.min() >= 25 and first.max() <= 75, (split, first.tolist())
    again = ImageNetDataModule(
        data_dir=str(cifar_jpeg.parent),
        folder=cifar_jpeg.name,
        test_split="test",
        val_per_class=500,
    )
    again.setup()
    assert again.datasets["test"].files == dm.datasets["test"].files
    # The test squares' centre crop is exactly the resize-and-centre-crop image that
    # plain evaluation uses, so TTA's centre view is the standard one.
    test, val_style = dm.datasets["test"], v2.Compose([v2.Resize(36), v2.CenterCrop(32)])
    for i in range(0, 10_000, 997):
        canvas, label = test[i]
        assert canvas.shape == (3, 36, 36) and CIFAR10_CLASSES[label] == test.files[i].parent.name
        expected = val_style(decode_rgb(test.files[i]))
        assert torch.equal(v2.functional.center_crop(canvas, [32, 32]), expected)


# -- as a user runs it -----------------------------------------------------------------------
def test_fit_then_ten_crop_test_on_an_image_tree(tmp_path: Path) -> None:
    """The ResNet-50 experiment with a small network and image size, on a tree with
    broken files: training completes and names them, test reports plain and TTA accuracy."""
    tree = make_tree(tmp_path / "data" / "imagenet", train_per_class=26)
    env = clean_env(tmp_path, CNN_BENCH_DATA=str(tmp_path / "data"))
    small = [
        "--config",
        str(EXPERIMENT),
        "--model.arch",
        "lenet5",
        "--data.image_size",
        "32",
        "--data.eval_resize",
        "40",
        "--data.num_workers",
        "2",
        "--data.val_per_class",
        "4",
        "--trainer.precision",
        "32-true",
        "--trainer.enable_progress_bar",
        "false",
    ]
    fit = run_cli(
        [
            "fit",
            *small,
            "--data.batch_size",
            "8",
            "--data.mixup_alpha",
            "0.2",
            "--data.cutmix_alpha",
            "1.0",
            "--data.auto_augment",
            "trivial",
            "--data.random_erasing",
            "0.25",
            "--trainer.max_epochs",
            "1",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    run = read_wandb_run(run_dir)
    assert run.metric("val/acc1") and run.config["num_classes"] == 3
    assert not run.metric("val/acc5")  # always 1 with 3 classes: not logged
    # Every broken file of the training split named, and counted at the end of the pass.
    dm = _module(tree, val_per_class=4)
    dm.setup()
    train = dm.datasets["train"]
    assert len(train) % 8 == 0  # whole batches: every file is read in the epoch
    broken = [f for f in train.files if f.name in broken_files()]
    assert broken
    for f in broken:
        assert f"skipped {f}: " in fit.stderr
    assert f"train pass 1: skipped {len(broken)} unreadable image files" in fit.stderr

    ckpt = tmp_path / "cnn_bench" / run.run_id / "checkpoints" / "last.ckpt"
    test = run_cli(
        ["test", *small, "--ckpt_path", str(ckpt), "--model.tta.views", "ten_crop"],
        cwd=tmp_path,
        env=env,
    )
    assert test.returncode == 0, test.stderr[-3000:]
    test_run = read_wandb_run(sorted((tmp_path / "wandb").glob("offline-run-*"))[-1])
    for name in ("test/acc1", "test/tta_acc1"):
        assert 0 <= test_run.summary[name] <= 1, name
    # 3 classes: top-5 would always be 1, so it is not logged.
    assert not {"test/acc5", "test/tta_acc5", "val/acc5"} & set(test_run.summary.keys())
    assert test_run.config["cli"]["model"]["tta"]["views"] == "ten_crop"
    # predict re-creates the loader (it crashed in BatchSampler.__init__)
    predict = run_cli(["predict", *small, "--ckpt_path", str(ckpt)], cwd=tmp_path, env=env)
    assert predict.returncode == 0, predict.stderr[-3000:]
    # ... and writes every readable test image's prediction, named by file, in the split's
    # order, with the class folder as its label; a broken file is named, not predicted.
    (out,) = tmp_path.rglob("predictions.csv")
    rows = list(csv.DictReader(out.open()))
    test_files = dm.datasets["predict"].files
    skipped = [f for f in test_files if f"skipped {f}: " in predict.stderr]
    assert len(rows) == len(test_files) - len(skipped) > 0
    assert [int(r["index"]) for r in rows] == sorted(int(r["index"]) for r in rows)
    for r in rows:
        assert r["file"] == str(test_files[int(r["index"])])
        assert r["label"] == Path(r["file"]).parent.name
        assert {r["class1"], r["class2"], r["class3"]} == set(dm.classes)


def test_the_pixel_limit_is_a_data_option(tree: Path) -> None:
    """``--data.max_pixels``: an image whose header claims more is skipped unread."""
    small = _module(tree, max_pixels=16 * 16)
    small.setup()
    item = small.datasets["train"][0]
    assert isinstance(item, Skipped) and "over the limit of 256" in item.reason
    default = _module(tree)
    default.setup()
    assert not isinstance(default.datasets["train"][0], Skipped)
