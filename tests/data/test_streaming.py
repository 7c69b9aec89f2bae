"""``cnn-bench data-optimize`` and ``--data.format litdata`` on a generated tree of real
image files (JPEGs of varied sizes, the awkward formats, three broken files): the chunks
hold each readable file's bytes unchanged, the streamed splits are the folder format's,
and a run trains on them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

pytest.importorskip("litdata")
from litdata import StreamingDataset  # noqa: E402

from cnn_bench.data import DataError  # noqa: E402
from cnn_bench.data.decode import UnreadableImage, decode_rgb  # noqa: E402
from cnn_bench.data.streaming import decode_bytes  # noqa: E402
from tests.conftest import clean_env, run_cli  # noqa: E402
from tests.data.image_trees import CLASSES, awkward_files, broken_files, make_tree, small_datamodule  # noqa: E402
from tests.wandb_files import read_wandb_run  # noqa: E402

EXPERIMENT = Path(__file__).resolve().parents[2] / "configs/experiment/resnet50_imagenet.yaml"
FOLDERS = {"train": "train_fit", "val": "train_holdout", "test": "val"}


def optimize(tree: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(
        ["data-optimize", str(tree), str(out), "--workers", "2", "--val-per-class", "2", *extra],
        cwd=out.parent,
        timeout=300,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A tree with awkward and broken files, and the chunks written from it."""
    root = tmp_path_factory.mktemp("stream")
    tree = make_tree(root / "pets")
    done = optimize(tree, root / "chunks")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return tree, root / "chunks", done.stdout + done.stderr


_module = small_datamodule


def test_decode_bytes_gives_what_decoding_the_file_gives(written: tuple) -> None:
    tree = written[0] / "train" / CLASSES[0]
    for name in [*awkward_files(), "n01440764_0000.JPEG"]:
        from_bytes = decode_bytes((tree / name).read_bytes(), 10**8)
        assert torch.equal(from_bytes, decode_rgb(tree / name)), name
    for name in broken_files():
        with pytest.raises(UnreadableImage):
            decode_bytes((tree / name).read_bytes(), 10**8)
    with pytest.raises(UnreadableImage, match="over the limit of 100"):
        decode_bytes((tree / "n01440764_0000.JPEG").read_bytes(), 100)


def test_chunks_and_manifest_are_written_and_broken_files_named(written: tuple) -> None:
    tree, out, said = written
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == list(CLASSES)
    assert (manifest["val_per_class"], manifest["split_seed"]) == (2, 0)
    # 12 JPEGs a class, 11 awkward and 3 broken files in the first, 2 a class held out.
    assert {s: (e["images"], e["skipped"]) for s, e in manifest["splits"].items()} == {
        "train": (3 * 10 + 11 + 3 - 3, 3),
        "val": (6, 0),
        "test": (12, 0),
    }
    for split, folder in FOLDERS.items():
        assert manifest["splits"][split]["folder"] == folder
        assert (out / folder / "index.json").is_file()
        assert list((out / folder).glob("chunk-*.bin"))
    for name in broken_files():
        lines = [line for line in said.splitlines() if name in line]
        assert len(lines) == 1 and lines[0].startswith("skipped "), lines
    assert "skipped 3 unreadable files" in said


def test_streamed_splits_hold_the_files_bytes_and_labels(written: tuple) -> None:
    """Every readable file of each of the DataModule's splits, its bytes unchanged (no
    second JPEG encoding) and its label; nothing else."""
    tree, out, _ = written
    splits = _module(tree).split_files()
    for split, folder in FOLDERS.items():
        files, labels = splits[split]
        expected = {
            (f.read_bytes(), label, f.relative_to(tree).as_posix())
            for f, label in zip(files, labels, strict=True)
            if f.name not in broken_files()
        }
        stored = StreamingDataset(str(out / folder))
        got = [(bytes(s["image"]), s["label"], bytes(s["path"]).decode()) for s in stored]
        assert len(got) == len(set(got)) and set(got) == expected, split


def test_the_litdata_format_batches_as_the_folder_format(written: tuple) -> None:
    """Same classes; the same validation and test images, pixel for pixel and in the same
    order, through real loader workers; whole training batches of training images."""
    tree, out, _ = written
    folder, chunks = _module(tree), _module(out, format="litdata", num_workers=2)
    assert chunks.classes == folder.classes and chunks.name == "chunks"
    folder.setup()
    chunks.setup()
    for split in ("val", "test"):
        ours = list(getattr(chunks, f"{split}_dataloader")())
        theirs = list(getattr(folder, f"{split}_dataloader")())
        assert len(ours) == len(theirs)
        for (a, y), (b, z) in zip(ours, theirs, strict=True):
            assert torch.equal(y, z) and torch.equal(a, b), split
    train = chunks.train_dataloader()
    batches = list(train)
    assert len(batches) == len(train) == 41 // 8
    assert all(images.shape == (8, 3, 32, 32) for images, _ in batches)
    # Two epochs, two orders: the training chunks are reshuffled each epoch.
    again = list(train)
    labels = [torch.cat([y for _, y in b]) for b in (batches, again)]
    assert not torch.equal(*labels)


def test_a_mid_epoch_resume_continues_the_epoch(written: tuple) -> None:
    """The training loader's state (what Lightning saves in a checkpoint) resumes the
    epoch where it stopped: the same batches as a run that never stopped."""
    _, out, _ = written
    torch.manual_seed(3)
    whole = _module(out, format="litdata", batch_size=4)
    whole.setup()
    loader = whole.train_dataloader()
    expected = [y.tolist() for _, y in loader]
    torch.manual_seed(3)
    first = _module(out, format="litdata", batch_size=4)
    first.setup()
    loader = first.train_dataloader()
    seen = []
    for _, y in loader:
        seen.append(y.tolist())
        if len(seen) == 3:
            state = loader.state_dict()
            break
    torch.manual_seed(3)
    resumed = _module(out, format="litdata", batch_size=4)
    resumed.setup()
    loader = resumed.train_dataloader()
    loader.load_state_dict(state)
    seen += [y.tolist() for _, y in loader]
    assert seen == expected


def test_chunks_of_another_hold_out_or_none_are_refused(written: tuple, tmp_path: Path) -> None:
    _, out, _ = written
    with pytest.raises(DataError, match="hold out val_per_class=2, not the --data.val_per_class 5"):
        _ = _module(out, format="litdata", val_per_class=5).classes
    with pytest.raises(DataError, match="no chunks written by `cnn-bench data-optimize"):
        _ = _module(tmp_path, format="litdata").classes


def _one_error_line(done: subprocess.CompletedProcess, *said: str) -> None:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cnn-bench data-optimize: error: "), lines
    for words in said:
        assert words in lines[0], lines[0]


def test_a_bad_tree_or_a_full_output_is_one_line(written: tuple, tmp_path: Path) -> None:
    tree, out, _ = written
    _one_error_line(optimize(tmp_path / "nowhere", tmp_path / "o"), "nowhere is not a folder")
    (tmp_path / "flat").mkdir()
    _one_error_line(optimize(tmp_path / "flat", tmp_path / "o"), "flat/train is not a folder")
    few = make_tree(tmp_path / "few", train_per_class=2, awkward=False, broken=False)
    _one_error_line(optimize(few, tmp_path / "o"), "too few to hold out val_per_class=2")
    _one_error_line(optimize(tree, out), "already holds chunks", "--overwrite")
    assert not (tmp_path / "o").exists()


def _fit_args(out: Path) -> list[str]:
    """A few steps of LeNet-5 on the chunks at ``out``, with the ImageNet experiment."""
    return [
        "fit",
        "--config",
        str(EXPERIMENT),
        "--model.arch",
        "lenet5",
        "--trainer.max_steps",
        "3",
        "--data.data_dir",
        str(out.parent),
        "--data.folder",
        out.name,
        "--data.format",
        "litdata",
        "--data.image_size",
        "32",
        "--data.eval_resize",
        "40",
        "--data.val_per_class",
        "2",
        "--data.batch_size",
        "8",
        "--data.num_workers",
        "2",
        "--trainer.precision",
        "32-true",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.log_every_n_steps",
        "1",
    ]


def test_fit_on_the_litdata_format_and_resume_mid_epoch(written: tuple, tmp_path: Path) -> None:
    """``cnn-bench fit --data.format litdata`` trains, validates and tests on the chunks;
    its checkpoint carries the training loader's position, and a run resumed from it
    after 3 of an epoch's 5 batches trains 2 more before its next epoch begins."""
    _, out, _ = written
    args = _fit_args(out)
    done = run_cli([*args, "--test_after_fit", "true"], cwd=tmp_path, env=clean_env(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    run = read_wandb_run(run_dir)
    assert run.config["num_classes"] == 3
    assert 0 <= run.summary["test/acc1"] <= 1
    hits = run.summary["test/acc1"] * 12  # every test image once
    assert abs(hits - round(hits)) < 1e-3
    (last,) = tmp_path.rglob("last.ckpt")
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    (state,) = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert state["num_samples_yielded"] == 3 * 8

    resumed = run_cli(
        [*args, "--trainer.max_steps", "7", "--ckpt_path", str(last)],
        cwd=tmp_path,
        env=clean_env(tmp_path),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (second,) = set((tmp_path / "wandb").glob("offline-run-*")) - {run_dir}
    history = read_wandb_run(second).history
    steps = [(row["trainer/global_step"], row["epoch"]) for row in history if "train/loss" in row]
    # 41 training images, batches of 8: 5 an epoch.
    assert steps == [(3, 0), (4, 0), (5, 1), (6, 1)]


def _rank(rank: int, out: str, port: int, result: str) -> None:
    """One of two gloo processes: the paths of the images its loaders give, per split."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)  # the training seed, the same on both, as seed_everything gives
    dm = _module(Path(out), format="litdata", batch_size=4, eval_batch_size=2, num_workers=1)
    dm.setup()
    seen = {}
    for split in ("train", "val", "test"):
        dm.datasets[split].transform = _path_as_image
        loader = getattr(dm, f"{split}_dataloader")()
        seen[split] = [_path(row) for images, _ in loader for row in images]
    Path(result, f"{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


def _path_as_image(sample: dict) -> tuple[torch.Tensor, int]:
    """The sample's path in place of its image, so the batches say which files they hold."""
    path = bytes(sample["path"]).ljust(80)
    return torch.frombuffer(bytearray(path), dtype=torch.uint8), int(sample["label"])


def _path(row: torch.Tensor) -> str:
    return bytes(row.tolist()).decode().rstrip()


@pytest.mark.slow
def test_two_gloo_processes_stream_disjoint_shards(written: tuple, tmp_path: Path) -> None:
    """Under torch.distributed, each process streams its own shard: training shards of
    equal size and disjoint; evaluation shards disjoint and together every image once."""
    import socket
    import sys

    _, out, _ = written
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import torch.multiprocessing as mp; from tests.data.test_streaming import _rank; "
        f"mp.spawn(_rank, args=({str(out)!r}, {port}, {str(tmp_path)!r}), nprocs=2)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    manifest = json.loads((out / "manifest.json").read_text())
    for split in ("train", "val", "test"):
        a, b = (set(r[split]) for r in ranks)
        assert a and b and not a & b, split
        assert len(a) + len(b) == sum(len(r[split]) for r in ranks)  # no repeats
        total = manifest["splits"][split]["images"]
        if split == "train":
            assert len(ranks[0][split]) == len(ranks[1][split]) >= (total - 1) // 2
        else:
            assert len(a | b) == total, split


@pytest.mark.slow
def test_two_process_ddp_fit_on_chunks_and_a_too_large_eval_batch(
    written: tuple, tmp_path: Path
) -> None:
    """Real two-process DDP (gloo) trains, validates and tests on the chunks, each test
    image counted once; evaluation batches larger than a process's share of the 6
    validation images end every process in one line, not a traceback on one of them."""
    from tests.test_ddp import DDP, _ok, run_ddp

    _, out, _ = written
    args = [*_fit_args(out), *DDP, "--trainer.max_epochs", "2", "--test_after_fit", "true"]
    done = run_ddp([*args, "--data.eval_batch_size", "3"], tmp_path, clean_env(tmp_path))
    _ok(done)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    hits = read_wandb_run(run_dir).summary["test/acc1"] * 12
    assert abs(hits - round(hits)) < 1e-3
    refused = run_ddp([*args, "--data.eval_batch_size", "4"], tmp_path, clean_env(tmp_path))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("cnn-bench: error:")]
    assert errors == [
        "cnn-bench: error: the val split's 6 images are fewer than one evaluation batch (4) "
        "for each of the 2 processes: give --data.eval_batch_size 3 or less"
    ]
