"""Uneven shards under real three-process DDP (gloo): data sets whose size three does not
divide, and an unreadable image in one process's training shard. Each process must take
the same number of training steps, and evaluation must not leave a collective unmatched;
a hang fails the test (``tests/test_ddp.py`` has the runner and its timeout)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnn_bench.data.sampling import BatchSampler, EpochOrder, keep_batch_count
from tests.conftest import REPO
from tests.data.image_trees import CLASSES, make_tree
from tests.test_ddp import _ok, run_ddp
from tests.wandb_files import read_wandb_run

THREE = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "3"]


def test_every_process_gets_the_same_number_of_training_batches() -> None:
    for n in (7, 100, 1001):
        for batch, drop_last in ((1, False), (4, False), (4, True), (333, False)):
            counts = {
                len(
                    list(
                        BatchSampler(
                            EpochOrder(n, shuffle=True),
                            batch,
                            drop_last,
                            rank=r,
                            world_size=3,
                            even_shards=True,
                        )
                    )
                )
                for r in range(3)
            }
            assert len(counts) == 1, (n, batch, counts)


def test_a_left_out_batch_is_replaced_not_dropped() -> None:
    batches = [[], [1], [], [], [2], []]
    assert list(keep_batch_count(batches, len)) == [[1], [1], [2], [2], [2], [2]]
    assert list(keep_batch_count([[], []], len)) == []  # nothing readable: nothing to give


@pytest.mark.slow
def test_three_processes_uneven_evaluation_shards_with_batch_norm(
    tmp_path: Path, cli_env: dict
) -> None:
    """1,000 validation and test images over 3 processes, 333 per batch: rank 0 has two
    evaluation batches (334 images), the others one. The network has batch norm, whose
    buffers DDP broadcasts at the first forward after training."""
    args = [
        "fit",
        "--config",
        str(REPO / "configs/experiment/fast_cifar10.yaml"),
        *THREE,
        "--model.arch_kwargs",
        "{widths: [8, 16, 16, 16]}",
        "--data.batch_size",
        "32",
        "--data.val_size",
        "1000",  # and 49,000 training images: neither divisible by 3
        "--data.test_size",
        "1000",
        "--data.eval_batch_size",
        "333",
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "4",
        "--trainer.enable_progress_bar",
        "false",
        "--test_after_fit",
        "true",
    ]
    _ok(run_ddp(args, tmp_path, cli_env))
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    summary = read_wandb_run(run).summary
    # Every test image counted once: the accuracy is a whole number of the 1,000.
    hits = summary["test/acc1"] * 1000
    assert abs(hits - round(hits)) < 1e-3


@pytest.mark.slow
def test_three_processes_with_an_unreadable_training_image(tmp_path: Path, cli_env: dict) -> None:
    """One empty image file in the training folder, batches of one image: the process
    whose shard holds it would have one step fewer; its batch is replaced instead. The
    11 test images are uneven over 3 processes (batches of 3: two, two and one)."""
    tree = make_tree(tmp_path / "data" / "pets", awkward=False, broken=False)
    (tree / "train" / CLASSES[0] / "empty.JPEG").write_bytes(b"")
    next((tree / "val" / CLASSES[0]).iterdir()).unlink()
    args = [
        "fit",
        "--config",
        str(REPO / "configs/experiment/resnet50_imagenet.yaml"),
        *THREE,
        "--model.arch",
        "lenet5",
        "--data.data_dir",
        str(tmp_path / "data"),
        "--data.folder",
        "pets",
        "--data.image_size",
        "32",
        "--data.eval_resize",
        "36",
        "--data.val_per_class",
        "2",
        "--data.batch_size",
        "1",
        "--data.eval_batch_size",
        "3",
        "--data.num_workers",
        "0",
        "--trainer.max_epochs",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--test_after_fit",
        "true",
    ]
    done = run_ddp(args, tmp_path, cli_env)
    _ok(done)
    assert "empty.JPEG" in done.stderr  # named, not silently replaced
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    hits = read_wandb_run(run).summary["test/acc1"] * 11
    assert abs(hits - round(hits)) < 1e-3
