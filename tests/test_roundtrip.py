"""Save -> ``load_from_checkpoint`` -> the same network: one architecture of each family.

Trained one real step first (so batch-norm statistics and weights are no longer their
initial values), then rebuilt from the checkpoint by name alone; eval-mode logits must be
identical, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from cnn_bench.data import CIFAR10DataModule
from cnn_bench.models import list_models, model_entry
from cnn_bench.module import ImageClassifier

# The smallest CIFAR network of each family in the registry.
FAMILIES = {"mlp": "logreg", "lenet": "lenet5", "resnet": "resnet18", "vgg": "vgg11_bn"}


def _one_per_family() -> list[str]:
    chosen: dict[str, str] = dict(FAMILIES)
    for name in list_models():
        entry = model_entry(name)
        if "cifar" in entry.variants:
            chosen.setdefault(entry.family, name)
    return sorted(chosen.values())


def test_every_family_is_covered() -> None:
    families = {model_entry(n).family for n in list_models()}
    assert {model_entry(n).family for n in _one_per_family()} == families


@pytest.mark.parametrize("arch", _one_per_family())
def test_a_checkpoint_rebuilds_the_same_network(
    arch: str, tmp_path: Path, cifar_root: Path
) -> None:
    torch.manual_seed(0)
    model = ImageClassifier(arch, num_classes=10, image_size=32)
    data = CIFAR10DataModule(data_dir=str(cifar_root), batch_size=8, val_size=100)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        use_distributed_sampler=False,
    )
    trainer.fit(model, data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = ImageClassifier.load_from_checkpoint(path, map_location="cpu")
    assert type(loaded.model) is type(model.model)
    x = torch.randn(4, 3, 32, 32)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
