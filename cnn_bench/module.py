"""``ImageClassifier``: the one LightningModule, for every registered network.

The network is built by name from the registry, so a checkpoint describes itself:
``ImageClassifier.load_from_checkpoint(path)`` rebuilds the same architecture.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from cnn_bench.models import create_model

STAGES = ("train", "val", "test")


def split_outputs(output: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, list[Tensor]]:
    """The main logits and any auxiliary logits (GoogLeNet's side classifiers in training)."""
    if isinstance(output, Tensor):
        return output, []
    main, *aux = output
    return main, [a for a in aux if a is not None]


class ImageClassifier(L.LightningModule):
    """Any registered architecture trained with cross-entropy, reporting top-1 and top-5.

    Args:
        arch: registered model name (``cnn-bench models`` lists them) or ``timm/<name>``.
        num_classes: linked from the DataModule; never set it by hand in a config.
        in_chans: input channels, linked from the DataModule.
        image_size: input side in pixels, linked from the DataModule; picks the CIFAR or
            ImageNet variant of networks that have both.
        arch_kwargs: keyword arguments of the architecture (``variant``, ``dropout``, ...).
        label_smoothing: cross-entropy label smoothing (Szegedy et al. 2016).
        aux_loss_weight: weight of auxiliary classifier losses (GoogLeNet: 0.3).
        optimizer: any ``torch.optim`` optimizer, as ``class_path``/``init_args``.
        lr_scheduler: any ``torch.optim.lr_scheduler`` or ``cnn_bench.schedules`` class;
            a ``total_steps`` left empty is filled with the run's length.
        scheduler_interval: step the schedule per optimizer ``step`` or per ``epoch``.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        num_classes: int = 10,
        in_chans: int = 3,
        image_size: int | None = None,
        arch_kwargs: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        aux_loss_weight: float = 0.3,
        optimizer: OptimizerCallable = torch.optim.SGD,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.model = create_model(
            arch, num_classes=num_classes, in_chans=in_chans, image_size=image_size,
            **(arch_kwargs or {}),
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.scheduler_interval = scheduler_interval
        # ``nn.Module`` reserves the name ``train``, hence the ``_metrics`` suffix.
        self.metrics = nn.ModuleDict({f"{stage}_metrics": self._accuracies(stage) for stage in STAGES})

    def _accuracies(self, stage: str) -> MetricCollection:
        n = self.hparams.num_classes
        return MetricCollection(
            {
                "acc1": MulticlassAccuracy(n, top_k=1, average="micro"),
                "acc5": MulticlassAccuracy(n, top_k=min(5, n), average="micro"),
            },
            prefix=f"{stage}/",
        )

    def forward(self, x: Tensor) -> Tensor:
        return split_outputs(self.model(x))[0]

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        images, labels = batch
        logits, aux = split_outputs(self.model(images))
        loss = self.criterion(logits, labels)
        for aux_logits in aux:
            loss = loss + self.hparams.aux_loss_weight * self.criterion(aux_logits, labels)
        # Metric objects are logged, not values: they accumulate on the device and
        # synchronise once per epoch, so no step waits for the device.
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(logits, labels)
        training = stage == "train"
        # Training loss per step (learning curves), evaluation loss per epoch over all ranks.
        self.log(f"{stage}/loss", loss, on_step=training, on_epoch=not training, prog_bar=True,
                 sync_dist=not training)
        self.log_dict(metrics, on_step=False, on_epoch=True)
        return loss, logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        # Returned for the callbacks (TestPredictions: confusion matrix, worst mistakes).
        return {"logits": self._step(batch, "test")[1], "labels": batch[1]}

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        images, labels = batch
        probs = self(images).softmax(dim=1)
        confidence, prediction = probs.max(dim=1)
        return {"prediction": prediction, "confidence": confidence, "label": labels}

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler_fn = self.lr_scheduler
        if isinstance(scheduler_fn, functools.partial) and scheduler_fn.keywords.get(
            "total_steps", 0
        ) is None:
            total = (
                self.trainer.estimated_stepping_batches
                if self.scheduler_interval == "step"
                else self.trainer.max_epochs
            )
            scheduler_fn = functools.partial(scheduler_fn, total_steps=int(total))
        scheduler = scheduler_fn(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }
