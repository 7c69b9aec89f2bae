"""Index batches for data sets held in memory, sharded across processes.

Indexing a uint8 tensor with a whole batch of indices is one gather; collating
images one at a time is hundreds of Python calls. ``BatchSampler`` yields index
batches for one process: reshuffled each epoch from ``seed + epoch`` (so every
process, and a resumed run, draws the same order) and split across processes
without padding, so no sample is seen twice in evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

# Primes mixing the parts of a per-batch seed, so that no two positions share one.
_MIX, _RANK_MIX = 1_000_003, 1_009


def batch_seed(*position: int, rank: int | None = None) -> int:
    """The seed of one batch's random draws, from its position in the run (``seed, epoch,
    step`` for training augmentation, ``seed, batch`` for test-time views) and, when
    given, the process's rank so that each process draws its own. Seeded by position, not
    by history, a resumed run draws exactly what it would have drawn."""
    key = position[0]
    for part in position[1:]:
        key = key * _MIX + part
    if rank is not None:
        key = key * _RANK_MIX + rank
    return key % 2**63


class EpochOrder(torch.utils.data.Sampler[int]):
    """Every index of a data set in one epoch's order: a permutation drawn from
    ``seed + epoch`` (the same on every process, and after a resume), or in order."""

    def __init__(
        self,
        num_samples: int,
        shuffle: bool,
        seed: int = 0,
        epoch_of: Callable[[], int] | None = None,
    ) -> None:
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.epoch = 0
        # Where the epoch is read from when the order is drawn (else what set_epoch said).
        self.epoch_of = epoch_of

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def current_epoch(self) -> int:
        return self.epoch_of() if self.epoch_of is not None else self.epoch

    def order(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        gen = torch.Generator().manual_seed(self.seed + self.current_epoch())
        return torch.randperm(self.num_samples, generator=gen)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(torch.utils.data.BatchSampler):
    """This process's index batches of ``sampler``'s order: every ``world_size``-th index
    from ``rank``, without padding, so no sample is evaluated twice; ``even_shards`` drops
    the last ``len % world_size`` indices so that training processes take the same number
    of steps (or DDP hangs). Batches are index tensors: a dataset held in memory gathers a
    whole batch at once (``TensorBatches``).

    A PyTorch ``BatchSampler`` with its ``sampler``, ``batch_size`` and ``drop_last``, so
    Lightning can re-create it: ``predict`` does, with ``drop_last=False`` and the loader's
    sampler (the data set in order), to track which image each prediction is of.
    """

    def __init__(
        self,
        sampler: torch.utils.data.Sampler[int],
        batch_size: int,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        even_shards: bool = False,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.rank, self.world_size, self.even_shards = rank, world_size, even_shards
        self._resume: tuple[int, int] | None = None  # (epoch, batches already done in it)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def resume(self, epoch: int, batches_done: int) -> None:
        """Skip the first ``batches_done`` batches the next time ``epoch`` is iterated."""
        self._resume = (epoch, batches_done)

    def _epoch(self) -> int:
        sampler = self.sampler
        return sampler.current_epoch() if isinstance(sampler, EpochOrder) else 0

    def _shard(self) -> Tensor:
        sampler = self.sampler
        order = sampler.order() if isinstance(sampler, EpochOrder) else torch.tensor(list(sampler))
        if self.even_shards:
            order = order[: len(order) - len(order) % self.world_size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Tensor]:
        epoch = self._epoch()
        shard = self._shard()
        stop = len(shard) - len(shard) % self.batch_size if self.drop_last else len(shard)
        batches = shard[:stop].split(self.batch_size)
        if self._resume is not None and self._resume[0] == epoch:
            batches = batches[self._resume[1] :]
        self._resume = None
        yield from batches

    def __len__(self) -> int:
        n = len(self.sampler)
        n -= n % self.world_size if self.even_shards else 0
        n = len(range(self.rank, n, self.world_size))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def whole_batch(batch: Any) -> Any:
    """The collate function of a dataset that gathers whole batches (``__getitems__``)."""
    return batch


class TensorBatches(torch.utils.data.Dataset):
    """Images and labels in memory; ``dataset[index_tensor]`` is a whole batch."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    # What a DataLoader calls with a whole batch of indices: one gather, no collation.
    __getitems__ = __getitem__


class ShardedBatches:
    """For LightningDataModules: index batches for this process, and an exact mid-epoch resume.

    ``batch_sampler`` builds a ``BatchSampler`` for the trainer's rank. The position in the
    training epoch is part of every checkpoint (a DataModule's ``state_dict``); after a
    resume the training sampler skips exactly the batches already trained on, so the run
    sees the batches it would have seen had it never stopped.

    The training order is drawn for ``trainer.current_epoch``, not for the number Lightning
    passes to ``set_epoch``: resumed from an epoch-end checkpoint with ``max_steps`` set,
    Lightning runs an empty epoch first and from then on passes one more than the epoch it
    trains (and augments, and logs), so every later epoch was shuffled as the next one.
    """

    seed: int
    trainer: Any
    train_sampler: BatchSampler | None = None
    _resume_at: tuple[int, int] | None = None

    def batch_sampler(
        self, num_samples: int, batch_size: int, train: bool, drop_last: bool = False
    ) -> BatchSampler:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        order = EpochOrder(
            num_samples,
            shuffle=train,
            seed=self.seed,
            epoch_of=(lambda: trainer.current_epoch) if train and trainer else None,
        )
        sampler = BatchSampler(order, batch_size, drop_last, rank, world, even_shards=train)
        if train:
            self.train_sampler = sampler
            if self._resume_at is not None:
                sampler.resume(*self._resume_at)
        return sampler

    def state_dict(self) -> dict[str, int]:
        """Where training is in the epoch, saved in every checkpoint; nothing once the epoch's
        batches are all done: the run goes on with the next epoch from its first batch."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress
        if progress.is_last_batch:
            # At the end of fit ``current_epoch`` already counts this epoch as done: saving
            # (epoch, batches) here skipped a whole epoch's worth of the next one on resume.
            return {}
        return {"epoch": trainer.current_epoch, "batches_done": progress.current.processed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not state:
            return
        self._resume_at = (state["epoch"], state["batches_done"])
        if self.train_sampler is not None:
            self.train_sampler.resume(*self._resume_at)


def keep_batch_count(batches: Iterable[T], usable: Callable[[T], bool]) -> Iterator[T]:
    """``batches`` with each unusable one replaced by the next usable one (by the last, at
    the end of the pass): as many batches as the sampler gave.

    Under DDP every process must take the same number of training steps: a process that
    left out a batch (of files that could not be read) would end its epoch one step early
    and wait in the epoch's end while the others wait for its gradients, forever. The
    samplers give every process the same number of training batches; this keeps it so.
    """
    owed, last = 0, None
    for batch in batches:
        if not usable(batch):
            owed += 1
            continue
        for _ in range(owed + 1):
            yield batch
        owed, last = 0, batch
    if last is not None:
        for _ in range(owed):
            yield last
