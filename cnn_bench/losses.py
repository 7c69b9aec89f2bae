"""The training losses ``ImageClassifier`` can minimise besides cross-entropy."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SquaredLoss(nn.Module):
    """Squared loss on one-hot targets, on the raw outputs (no softmax): the mean over
    the batch of ``sum_k (output_k - target_k)^2``, as Belkin, Hsu, Ma and Mandal (PNAS
    2019) train their double-descent networks.

    Soft targets (mixup, cutmix: one row of class weights per image) are used as given;
    ``label_smoothing`` mixes the target with the uniform distribution, as
    ``nn.CrossEntropyLoss`` does: ``(1 - eps) * target + eps / K``.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, outputs: Tensor, labels: Tensor) -> Tensor:
        classes = outputs.shape[1]
        target = labels if labels.dim() == 2 else F.one_hot(labels, classes)
        target = target.to(outputs.dtype)
        if self.label_smoothing:
            target = (1 - self.label_smoothing) * target + self.label_smoothing / classes
        return (outputs - target).pow(2).sum(dim=1).mean()


LOSSES = ("cross_entropy", "squared")


def make_loss(name: str, label_smoothing: float = 0.0) -> nn.Module:
    """The criterion named ``name``; an unknown name raises ``ValueError`` naming both."""
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "squared":
        return SquaredLoss(label_smoothing)
    raise ValueError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
