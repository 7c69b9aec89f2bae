"""Both DataModules restore their place in an epoch from a checkpoint's state."""

from __future__ import annotations

from pathlib import Path

import torch

from cnn_bench.data import CIFAR10DataModule
from cnn_bench.data.imagefolder import ImageNetDataModule
from cnn_bench.data.sampling import BatchSampler, EpochOrder
from tests.data.image_trees import make_tree


def test_sampler_shards_without_padding_and_resumes() -> None:
    in_order = EpochOrder(10, shuffle=False)
    shards = [list(BatchSampler(in_order, 3, rank=r, world_size=3)) for r in range(3)]
    seen = sorted(int(i) for shard in shards for batch in shard for i in batch)
    assert seen == list(range(10))  # every sample once, none repeated
    full = list(BatchSampler(EpochOrder(20, shuffle=True, seed=1), 4))
    resumed = BatchSampler(EpochOrder(20, shuffle=True, seed=1), 4)
    resumed.resume(epoch=0, batches_done=2)
    assert [b.tolist() for b in resumed] == [b.tolist() for b in full[2:]]
    assert len(list(resumed)) == 5  # the skip applies to that one epoch only


def _first_labels(loader) -> list[list[int]]:
    return [batch[1].tolist() for batch in loader]


def test_datamodules_skip_the_batches_a_checkpoint_trained_on(
    cifar_root: Path, tmp_path: Path
) -> None:
    make_tree(
        tmp_path / "imagenet", train_per_class=8, val_per_class=2, awkward=False, broken=False
    )
    modules = [
        lambda: CIFAR10DataModule(data_dir=str(cifar_root), batch_size=4096),
        lambda: ImageNetDataModule(
            data_dir=str(tmp_path),
            batch_size=3,
            val_per_class=1,
            image_size=32,
            eval_resize=36,
            num_workers=0,
        ),
    ]
    for build in modules:
        torch.manual_seed(0)
        straight = build()
        straight.setup("fit")
        batches = _first_labels(straight.train_dataloader())
        torch.manual_seed(0)
        resumed = build()
        resumed.setup("fit")
        resumed.load_state_dict({"epoch": 0, "batches_done": 2})
        assert _first_labels(resumed.train_dataloader()) == batches[2:]
