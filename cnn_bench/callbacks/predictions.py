"""Test-time predictions: the confusion matrix and the most confident mistakes."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from cnn_bench.files import write_text_atomic
from cnn_bench.runs import CONFUSION_FILE, run_directory, wandb_loggers


def _display_images(images: Tensor, datamodule: Any) -> Tensor:
    """Model inputs back to uint8 ``N x H x W x C`` pictures: un-normalised with the
    DataModule's ``mean``/``std`` (0-255 scale) when it has them, else stretched per image."""
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if isinstance(mean, Tensor) and isinstance(std, Tensor) and mean.numel() == images.shape[1]:
        shape = (1, -1, 1, 1)
        pixels = images * std.to(images).view(shape) + mean.to(images).view(shape)
    else:
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        pixels = (images - low) / (high - low).clamp_min(1e-8) * 255
    return pixels.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)


class TestPredictions(Callback):
    """At test time, log the confusion matrix and a table of the worst mistakes to W&B.

    The worst mistakes are the wrong predictions made with the highest confidence,
    shown with their images, label, prediction and the probability given to the
    true class. Both are gathered from every process under DDP and logged by rank
    zero; the matrix is also written to ``<run dir>/confusion_matrix.csv``. Needs a
    ``test_step`` that returns ``{"logits", "labels"}``.

    Args:
        num_images: rows of the predictions table.
        max_chart_classes: above this many classes the matrix is only written to the
            file (a W&B table holds at most 10,000 rows, one per cell).
    """

    def __init__(self, num_images: int = 32, max_chart_classes: int = 100) -> None:
        self.num_images = num_images
        self.max_chart_classes = max_chart_classes

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_directory(trainer)  # on every rank: the file is written by rank zero alone

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = pl_module.hparams.num_classes
        self.matrix = torch.zeros(n * n, dtype=torch.int64, device=pl_module.device)
        # The candidates stay on the device, merged batch by batch; confidence -1 marks
        # a correct prediction or an empty slot.
        self.confidence = torch.zeros(0, device=pl_module.device)
        self.label_prob = torch.zeros(0, device=pl_module.device)
        self.labels = torch.zeros(0, dtype=torch.int64, device=pl_module.device)
        self.preds = torch.zeros_like(self.labels)
        self.images: Tensor | None = None

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        logits, labels = outputs["logits"].detach(), outputs["labels"]
        probs = logits.float().softmax(dim=1)
        confidence, preds = probs.max(dim=1)
        n = probs.shape[1]
        self.matrix += torch.bincount(labels * n + preds, minlength=n * n)
        wrong = torch.where(preds != labels, confidence, torch.full_like(confidence, -1.0))
        k = min(self.num_images, len(wrong))
        top = wrong.topk(k).indices
        images = _display_images(batch[0][top].float(), trainer.datamodule)
        label_prob = probs[top].gather(1, labels[top, None])[:, 0]
        self._merge(wrong[top], label_prob, labels[top], preds[top], images)

    def _merge(
        self, confidence: Tensor, label_prob: Tensor, labels: Tensor, preds: Tensor, images: Tensor
    ) -> None:
        if self.images is not None:
            confidence = torch.cat([self.confidence, confidence])
            label_prob = torch.cat([self.label_prob, label_prob])
            labels = torch.cat([self.labels, labels])
            preds = torch.cat([self.preds, preds])
            images = torch.cat([self.images, images])
        keep = confidence.topk(min(self.num_images, len(confidence))).indices
        self.confidence, self.label_prob = confidence[keep], label_prob[keep]
        self.labels, self.preds, self.images = labels[keep], preds[keep], images[keep]

    def _gather(self, trainer: L.Trainer, tensor: Tensor) -> Tensor:
        if trainer.world_size == 1:
            return tensor
        return trainer.strategy.all_gather(tensor).reshape(-1, *tensor.shape[1:])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = pl_module.hparams.num_classes
        matrix = trainer.strategy.reduce(self.matrix, reduce_op="sum").view(n, n).cpu()
        # Every process enters the same collectives: one with no test batch (a shard
        # smaller than the world) makes all of them skip the gather, not only itself.
        has_images = torch.tensor(float(self.images is not None), device=pl_module.device)
        if float(trainer.strategy.reduce(has_images, reduce_op="min")) == 0:
            return self._finish(trainer, matrix, None)
        # all_gather needs equal shapes: every process pads to num_images candidates.
        pad = self.num_images - len(self.confidence)
        buffers = [
            torch.cat([t, torch.full((pad, *t.shape[1:]), fill, dtype=t.dtype, device=t.device)])
            for t, fill in (
                (self.confidence, -1),
                (self.label_prob, 0),
                (self.labels, 0),
                (self.preds, 0),
                (self.images, 0),
            )
        ]
        self._finish(trainer, matrix, [self._gather(trainer, t) for t in buffers])

    def _finish(self, trainer: L.Trainer, matrix: Tensor, gathered: list[Tensor] | None) -> None:
        if not trainer.is_global_zero:
            return
        classes = list(getattr(trainer.datamodule, "classes", None) or range(len(matrix)))
        classes = [str(c) for c in classes]
        path = run_directory(trainer) / CONFUSION_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["true\\predicted," + ",".join(classes)]
        lines += [
            f"{c}," + ",".join(map(str, row.tolist()))
            for c, row in zip(classes, matrix, strict=True)
        ]
        write_text_atomic(path, "\n".join(lines) + "\n")
        for logger in wandb_loggers(trainer):
            self._log_wandb(logger, trainer.global_step, matrix, classes, gathered)

    def _log_wandb(
        self,
        logger: WandbLogger,
        step: int,
        matrix: Tensor,
        classes: list[str],
        gathered: list[Tensor] | None,
    ) -> None:
        import wandb

        logged: dict[str, Any] = {}
        if len(classes) <= self.max_chart_classes:
            cells = [
                [classes[i], classes[j], int(matrix[i, j])]
                for i in range(len(classes))
                for j in range(len(classes))
            ]
            # The table wandb.plot.confusion_matrix builds, from counts instead of predictions.
            logged["test/confusion_matrix"] = wandb.plot_table(
                "wandb/confusion_matrix/v1",
                wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=cells),
                {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
                {"title": "Test confusion matrix"},
            )
        if gathered is not None:
            confidence, label_prob, labels, preds, images = (t.cpu() for t in gathered)
            order = [i for i in confidence.argsort(descending=True).tolist() if confidence[i] >= 0]
            rows = [
                [
                    wandb.Image(images[i].numpy()),
                    classes[labels[i]],
                    classes[preds[i]],
                    float(confidence[i]),
                    float(label_prob[i]),
                ]
                for i in order[: self.num_images]
            ]
            logged["test/worst_predictions"] = wandb.Table(
                columns=["image", "label", "prediction", "confidence", "label_probability"],
                data=rows,
            )
        logger.log_metrics(logged, step=step)
