"""``cnn-bench predict``: every prediction of the predict loop, in a file and a W&B table."""

from __future__ import annotations

import csv
import io
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from cnn_bench.files import write_text_atomic
from cnn_bench.runs import PREDICTIONS_FILE, run_directory, wandb_loggers


class PredictionWriter(BasePredictionWriter):
    """Write ``<run dir>/predictions.csv`` when ``predict`` ends: one row per image of the
    predicted split, in the split's order, with its ``index`` (and ``file`` for an image
    tree) where the loader tells them, the true ``label``, and the ``top_k`` classes by
    name with their probabilities. Under W&B the same rows (at most ``max_table_rows``)
    are the table ``predict/predictions``.

    Every process keeps its own rows on the device; at the end they are gathered from all
        processes (every rank enters the same collective) and rank zero writes them.

        Args:
            top_k: classes per row (at most the number of classes).
            max_table_rows: rows of the W&B table; the file always has them all.
    """

    def __init__(self, top_k: int = 5, max_table_rows: int = 10_000) -> None:
        super().__init__(write_interval="batch")
        self.top_k = top_k
        self.max_table_rows = max_table_rows

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_directory(trainer)  # on every rank: the file is written by rank zero alone

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Tensor],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        probs, labels = prediction["probs"], prediction["label"]
        values, classes = probs.topk(min(self.top_k, probs.shape[1]), dim=1)
        # The images' places in the split, when Lightning can tell them (-1 otherwise).
        given = [] if batch_indices is None else torch.as_tensor(batch_indices).flatten().tolist()
        index = _kept_indices(trainer, [int(i) for i in given], len(labels))
        index = torch.as_tensor(index, dtype=torch.int64, device=labels.device)
        self.parts.append((index, labels, classes, values.float()))

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        columns = [torch.cat(part) for part in zip(*self.parts, strict=True)] if self.parts else []
        if trainer.world_size > 1:  # every rank, even one with no rows
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, [c.cpu() for c in columns])
            parts = [p for p in gathered if p]
            columns = [torch.cat(c) for c in zip(*parts, strict=True)] if parts else []
        if not trainer.is_global_zero or not columns:
            return
        index, labels, classes, values = (c.cpu() for c in columns)
        if (index >= 0).all():  # in the split's order, whatever the sharding
            order = index.argsort()
            index, labels, classes, values = (
                index[order],
                labels[order],
                classes[order],
                values[order],
            )
        names = _class_names(trainer, pl_module)
        files = _files(trainer)
        known = bool((index >= 0).all())  # else the split's order is not known: no index
        header = [*(["index"] if known else []), *(["file"] if files and known else []), "label"]
        header += [
            f"{what}{i}" for i in range(1, classes.shape[1] + 1) for what in ("class", "prob")
        ]
        rows = []
        for i, label, top, prob in zip(
            index.tolist(), labels.tolist(), classes.tolist(), values.tolist(), strict=True
        ):
            row: list[Any] = [i] if known else []
            if files and known:
                row.append(str(files[i]))
            row.append(names[label] if 0 <= label < len(names) else label)
            row += [x for c, p in zip(top, prob, strict=True) for x in (names[c], round(p, 4))]
            rows.append(row)
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(header)
        writer.writerows(rows)
        path = run_directory(trainer) / PREDICTIONS_FILE
        write_text_atomic(path, text.getvalue())
        correct = int((classes[:, 0] == labels).sum())
        print(
            f"cnn-bench predict: {len(rows)} images -> {path}; "
            f"top-1 {100 * correct / len(rows):.2f}%"
        )
        for logger in wandb_loggers(trainer):
            logger.log_table(
                "predict/predictions", columns=header, data=rows[: self.max_table_rows]
            )


def _kept_indices(trainer: L.Trainer, indices: list[int], n: int) -> list[int]:
    """The split indices of the ``n`` images that reached the network: an image tree's
    loader leaves out files it cannot decode, so those are taken out of the batch's."""
    if len(indices) == n:
        return indices
    files = _files(trainer)
    loader = trainer.predict_dataloaders
    skipped = {item.path for item in getattr(loader, "skipped", [])}
    if files and indices:
        kept = [i for i in indices if str(files[i]) not in skipped]
        if len(kept) == n:
            return kept
    return [-1] * n


def _files(trainer: L.Trainer) -> list[Any] | None:
    loader = trainer.predict_dataloaders
    return getattr(getattr(loader, "dataset", None), "files", None)


def _class_names(trainer: L.Trainer, pl_module: L.LightningModule) -> list[str]:
    classes = getattr(trainer.datamodule, "classes", None)
    if classes and len(classes) == pl_module.hparams.num_classes:
        return [str(c) for c in classes]
    return [str(i) for i in range(pl_module.hparams.num_classes)]
