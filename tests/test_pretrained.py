"""Starting from trained weights: torchvision's, a file, another cnn_bench run; a new head
for another number of classes; the head trained first, the backbone at its own rate."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision

from cnn_bench.data import ImageNetDataModule
from cnn_bench.models import create_model
from cnn_bench.models.pretrained import PretrainedError, load_pretrained
from cnn_bench.module import ImageClassifier
from tests.conftest import REPO, run_cli
from tests.data.image_trees import make_tree


@pytest.fixture(scope="module")
def torchvision_resnet18(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A torchvision ResNet-18 with non-trivial weights, saved where torch hub keeps
    downloaded weights (the machine is offline: the test makes the file itself)."""
    home = tmp_path_factory.mktemp("torch_home")
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(net.state_dict(), cache / url.rsplit("/", 1)[1])
    return home, net


def test_torchvision_weights_from_the_cache_give_torchvisions_outputs(
    torchvision_resnet18: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, reference = torchvision_resnet18
    monkeypatch.setenv("TORCH_HOME", str(home))
    ours = create_model("resnet18", num_classes=1000, image_size=224).eval()
    assert load_pretrained(ours, "torchvision:ResNet18_Weights.IMAGENET1K_V1", 1000) == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def test_another_number_of_classes_keeps_a_fresh_head(
    torchvision_resnet18: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    _, reference = torchvision_resnet18
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    ours = create_model("resnet18", num_classes=3, image_size=224)
    fresh_head = ours.fc.weight.detach().clone()
    assert load_pretrained(ours, str(path), 3) == ["fc.bias", "fc.weight"]
    assert torch.equal(ours.fc.weight, fresh_head) and ours.fc.weight.shape == (3, 512)
    source = reference.state_dict()
    for key, value in ours.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, source[key]), key


def test_weights_that_do_not_fit_are_refused_listing_the_keys(
    torchvision_resnet18: tuple[Path, torch.nn.Module], tmp_path: Path, cli_env: dict
) -> None:
    _, reference = torchvision_resnet18
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    with pytest.raises(PretrainedError, match=r"does not fit this network: missing layer1\.2"):
        load_pretrained(create_model("resnet34", num_classes=1000, image_size=224), str(path), 1000)
    # and through the CLI: one line, exit 2
    done = run_cli(
        [
            "fit",
            "--config",
            str(REPO / "configs/experiment/lenet5_cifar10.yaml"),
            "--model.pretrained",
            str(path),
        ],
        cwd=tmp_path,
        env=cli_env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"cnn-bench: error: {path} does not fit this network: missing")
    assert "Traceback" not in done.stderr
    offline = run_cli(
        ["fit", "--config", str(REPO / "configs/experiment/lenet5_cifar10.yaml"),
         "--model.pretrained", "torchvision:ResNet18_Weights.IMAGENET1K_V1"],
        cwd=tmp_path,
        env={**cli_env, "TORCH_HOME": str(tmp_path / "empty")},
        timeout=300,
    )  # fmt: skip
    assert offline.returncode == 2 and "not in the local cache" in offline.stderr.splitlines()[-1]


def test_fine_tuning_trains_the_head_first_then_the_backbone_slower(
    torchvision_resnet18: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    """A torchvision ResNet-18 fine-tuned on a 3-class image tree: epoch 0 trains only the
    new head; from epoch 1 the backbone moves too, at a tenth of the head's rate."""
    _, reference = torchvision_resnet18
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    make_tree(tmp_path / "tree", train_per_class=12, awkward=False, broken=False)
    data = ImageNetDataModule(
        data_dir=str(tmp_path), folder="tree", batch_size=8, image_size=64, eval_resize=64,
        val_per_class=2, num_workers=0,
    )  # fmt: skip
    model = ImageClassifier(
        "resnet18", num_classes=3, image_size=64, arch_kwargs={"variant": "imagenet"},
        pretrained=str(path),
        freeze_backbone_epochs=1, backbone_lr_scale=0.1,
    )  # fmt: skip
    source = {k: v.clone() for k, v in model.model.state_dict().items()}
    snapshots = []

    class Snapshot(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            snapshots.append({k: v.clone() for k, v in pl_module.model.state_dict().items()})

    L.Trainer(
        accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
        limit_val_batches=0, callbacks=[Snapshot()], default_root_dir=tmp_path,
        use_distributed_sampler=False,
    ).fit(model, data)  # fmt: skip
    first, second = snapshots
    weights = [k for k in source if k.endswith("weight") and not k.startswith("fc.")]
    assert all(torch.equal(first[k], source[k]) for k in weights)  # backbone frozen in epoch 0
    assert not torch.equal(first["fc.weight"], source["fc.weight"])
    assert any(not torch.equal(second[k], first[k]) for k in weights)  # then it trains
    groups = model.trainer.optimizers[0].param_groups
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])
