"""Ensembles at test and predict time: several trained networks, one averaged prediction.

``cnn-bench test --ckpt_path A.ckpt --model.ensemble.members '[B.ckpt, runs/*/last.ckpt]'``
tests A as usual (``test/acc1``) and, beside it, each other member (``test/member1_acc1``,
...) and the ensemble of all of them (``test/ensemble_acc1``, ``test/ensemble_acc5``):
the members' softmax probabilities averaged (or their logits, ``average: logits``),
equally or with ``weights``, each member's over the test-time views when ``--model.tta``
is set. Members may be different architectures; they must have been trained on data
with the same classes (a one-line error otherwise). ``predict`` writes the ensemble's
probabilities.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from cnn_bench.checkpoint import read_checkpoint
from cnn_bench.runs import METRICS_FILE


class EnsembleError(ValueError):
    """Members that cannot be averaged: other classes, another data set, no files."""


@dataclass
class EnsembleConfig:
    """Which checkpoints join the tested one, and how their predictions are combined.

    Args:
        members: checkpoint files, glob patterns or ``group:NAME`` (the ``last.ckpt``
            of every run of that W&B group, in seed order), besides ``--ckpt_path``
            (none: an ensemble of one, the tested network alone).
        average: average softmax ``probs`` (the default) or raw ``logits``.
        weights: one weight per member, the tested checkpoint first; default equal.
        cumulative: also log the ensemble of the first k networks for every k
            (``test/ensemble_k1_acc1`` is the tested network alone, ...,
            ``test/ensemble_k<n>_acc1`` all of them): accuracy against ensemble size,
            from one pass over the test set.
    """

    members: list[str] = field(default_factory=list)
    average: Literal["probs", "logits"] = "probs"
    weights: list[float] | None = None
    cumulative: bool = False


GROUP = "group:"


def group_checkpoints(group: str, runs_dir: Path | None = None) -> list[str]:
    """The ``last.ckpt`` of every run of the W&B ``group`` under ``runs_dir`` (``$WANDB_DIR``,
    else ``runs/``: where fit puts them), in seed order: a study's seeds, for instance."""
    runs_dir = runs_dir or Path(os.environ.get("WANDB_DIR", "runs"))
    found = []
    for record in runs_dir.glob(f"*/*/{METRICS_FILE}"):
        try:
            metrics = json.loads(record.read_text())
        except (OSError, ValueError):
            continue  # a damaged record is not a member
        last = record.parent / "checkpoints" / "last.ckpt"
        if metrics.get("group") == group and last.is_file():
            found.append((metrics.get("seed") or 0, str(last)))
    return [path for _, path in sorted(found)]


def member_paths(config: EnsembleConfig) -> list[Path]:
    """The member files, globs expanded in sorted order and ``group:NAME`` to the runs of
    that W&B group; a pattern or group matching nothing or a missing file is an
    ``EnsembleError`` naming it."""
    paths: list[Path] = []
    for item in config.members:
        if item.startswith(GROUP):
            found = group_checkpoints(item[len(GROUP) :])
        elif glob.has_magic(item):
            found = sorted(glob.glob(item, recursive=True))
        else:
            found = [item]
        if not found:
            raise EnsembleError(f"ensemble member {item!r} matches no file")
        for path in map(Path, found):
            if not path.is_file():
                raise EnsembleError(f"ensemble member {path}: no such checkpoint file")
            paths.append(path)
    n = len(paths) + 1  # with the tested checkpoint
    if config.weights is not None and len(config.weights) != n:
        raise EnsembleError(
            f"ensemble of {n} networks (the tested checkpoint and {n - 1} members) but "
            f"{len(config.weights)} weights given"
        )
    return paths


def check_same_data(path: Path, classes: list[str], data_name: str | None) -> None:
    """A member must have been trained on data with the tested data's classes."""
    data = read_checkpoint(path, mmap=True).get("data") or {}
    theirs = data.get("classes") or []
    if theirs and classes and theirs != classes:
        shown = ", ".join(theirs[:5]) + (", ..." if len(theirs) > 5 else "")
        raise EnsembleError(
            f"ensemble member {path} was trained on other classes ({len(theirs)}: {shown}) "
            f"than the data tested ({len(classes)})"
        )
    if data.get("name") and data_name and data["name"] != data_name:
        raise EnsembleError(
            f"ensemble member {path} was trained on {data['name']}, the data tested is {data_name}"
        )


def combine(scores: list[Tensor], config: EnsembleConfig, first: int | None = None) -> Tensor:
    """The weighted average of the members' class scores (probabilities, or logits with
    ``average: logits``), in float32; of the ``first`` members only when given."""
    weights = config.weights or [1.0] * len(scores)
    if len(weights) != len(scores):
        raise EnsembleError(f"{len(scores)} members but {len(weights)} weights")
    scores, weights = scores[:first], weights[:first]
    total = float(sum(weights))
    out = torch.zeros_like(scores[0], dtype=torch.float32)
    for weight, s in zip(weights, scores, strict=True):
        out = out + s.float() * (weight / total)
    return out


def load_members(paths: list[Path], datamodule: Any, tested: Any) -> list[Any]:
    """The members as ``ImageClassifier``s in eval mode on the ``tested`` network's device,
    each checked against the tested data's classes and the tested network's class count."""
    from cnn_bench.data.common import data_description
    from cnn_bench.module import ImageClassifier  # the module imports this one

    description = data_description(datamodule) if datamodule is not None else {}
    members = []
    for path in paths:
        check_same_data(path, description.get("classes") or [], description.get("name"))
        member = ImageClassifier.load_from_checkpoint(path, map_location=tested.device)
        if member.hparams.num_classes != tested.hparams.num_classes:
            raise EnsembleError(
                f"ensemble member {path} has {member.hparams.num_classes} classes, "
                f"the tested network {tested.hparams.num_classes}"
            )
        members.append(member.eval().requires_grad_(False))
    return members
