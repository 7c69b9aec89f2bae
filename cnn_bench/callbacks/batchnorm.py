"""Batch norm at test time: running averages, recomputed statistics, or batch statistics.

A network with batch norm normalises each test image with statistics it did not see
in that batch. Three choices (``--bn_test.mode``):

- ``running`` (the default, PyTorch's): the exponential moving averages kept during
  training. They average over weights that kept changing, so they lag the final ones.
- ``precise``: before testing, every batch norm layer's statistics are recomputed with
  the final weights over ``batches`` training batches ("precise BN", Wu and Johnson,
  "Rethinking 'Batch' in BatchNorm", 2021): the running buffers are reset and fed with
  ``momentum=None``, PyTorch's cumulative average, so each becomes the mean of the
  batches' means and of their (unbiased) variances. The batches are the training
  loader's, with the training augmentation (crops and flips as training drew them;
  mixup and cutmix are not applied): the statistics of the distribution the network
  was trained on. Only batch norm runs in training mode; dropout stays off, as at test
  time. Under DDP each process reads its own shard of the training set and the
  recomputed means and variances are then averaged over the processes (an all-reduce),
  so every rank tests with the same statistics.
- ``batch``: batch norm stays in training mode while testing, normalising each test
  batch with its own statistics (so the result depends on the test batch size,
  ``--data.eval_batch_size``); the running buffers are left untouched. Under DDP each
  process normalises with its own batch only (no reduction), as training did.

Only the network (``pl_module.model``) is changed, not an EMA copy or ensemble members.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import lightning as L
import torch
from jsonargparse.typing import PositiveInt
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from cnn_bench.data.base import ImageDataModule
from cnn_bench.data.sampling import batch_seed

BatchNormTestModes = Literal["running", "precise", "batch"]


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The batch norm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_statistics(
    model: nn.Module,
    batches: Iterable[Tensor],
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> int:
    """Replace every batch norm layer's running mean and variance by the average of the
    batch means and variances of ``model``'s inputs over ``batches`` (only batch norm in
    training mode); ``reduce`` (an all-reduce mean under DDP) combines processes.
    Returns the number of batches read; the model is left in the mode it was in."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # the cumulative average of all batches, not a moving one
    model.eval()
    for m in layers:
        m.train()
    count = 0
    try:
        for images in batches:
            model(images)
            count += 1
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    if reduce is not None:
        for m in layers:
            m.running_mean.copy_(reduce(m.running_mean))
            m.running_var.copy_(reduce(m.running_var))
    return count


def training_batches(trainer: L.Trainer, pl_module: L.LightningModule, limit: int):
    """Up to ``limit`` training batches on the module's device, augmented as training
    augments them and normalised: what the network saw as input in training."""
    datamodule = trainer.datamodule
    if datamodule is None:
        raise ValueError("precise batch norm needs a DataModule with a training split")
    datamodule.setup("fit")
    for i, (images, labels) in enumerate(datamodule.train_dataloader()):
        if i >= limit:
            return
        images = images.to(pl_module.device)
        if isinstance(datamodule, ImageDataModule):
            if datamodule.augments_on_device:
                seed = batch_seed(datamodule.seed, 0, i, rank=trainer.global_rank)
                generator = torch.Generator(images.device).manual_seed(seed)
                images = datamodule.augment(images, generator)
            # Outside training, the DataModule's hook only normalises.
            images, labels = datamodule.on_after_batch_transfer((images, labels), 0)
        yield images


class BatchNormTestMode(Callback):
    """Which batch norm statistics ``test`` uses: ``running``, ``precise`` or ``batch``
    (module docstring). ``batches``: training batches read by ``precise``."""

    def __init__(self, mode: BatchNormTestModes = "running", batches: PositiveInt = 200) -> None:
        self.mode = mode
        self.batches = int(batches)
        self._saved: list[tuple[_BatchNorm, Any, Tensor]] = []

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", pl_module)
        if self.mode == "precise":
            count = recompute_statistics(
                model,
                training_batches(trainer, pl_module, self.batches),
                lambda t: trainer.strategy.reduce(t, reduce_op="mean"),
            )
            if count and trainer.is_global_zero:
                layers = len(batchnorm_layers(model))
                print(f"precise batch norm: {layers} layers' statistics over {count} batches")
        elif self.mode == "batch":
            # Momentum 0 keeps the running buffers as they are while the layers normalise
            # with each batch's own statistics.
            for m in batchnorm_layers(model):
                self._saved.append((m, m.momentum, m.num_batches_tracked.clone()))
                m.momentum = 0.0
                m.train()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for m, momentum, tracked in self._saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
            m.eval()
        self._saved = []
