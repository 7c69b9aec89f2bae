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


def test_lightning_re_creates_the_sampler_for_predict_with_this_process_shard() -> None:
    """Lightning re-creates a loader's batch sampler to track prediction indices: it must
    be a PyTorch BatchSampler whose saved arguments rebuild the same shard."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.trainer.states import RunningStage
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DataLoader

    from cnn_bench.data.sampling import TensorBatches, whole_batch

    data = TensorBatches(torch.arange(10)[:, None], torch.arange(10))
    # As Lightning calls a *_dataloader hook: recording the arguments of what it builds.
    with (
        _replace_dunder_methods(DataLoader, "dataset"),
        _replace_dunder_methods(torch.utils.data.BatchSampler),
    ):
        sampler = BatchSampler(EpochOrder(10, shuffle=False), 2, rank=1, world_size=3)
        loader = DataLoader(data, batch_sampler=sampler, collate_fn=whole_batch)
    assert isinstance(sampler, torch.utils.data.BatchSampler)
    again = _update_dataloader(loader, loader.sampler, mode=RunningStage.PREDICTING)
    assert [labels.tolist() for _, labels in again] == [[1, 4], [7]]
    assert [indices.tolist() for indices in again.batch_sampler.seen_batch_indices] == [[1, 4], [7]]
