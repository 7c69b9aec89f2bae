"""ImageClassifier's training knobs, each checked against what it promises."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from cnn_bench.callbacks import NonFiniteLossError, RunSummary, StopOnNonFinite
from cnn_bench.data import CIFAR10DataModule, ImageNetDataModule
from cnn_bench.module import ImageClassifier


@pytest.fixture(scope="module")
def data(cifar_root: Path) -> CIFAR10DataModule:
    """Read once for the module; no augmentation, so two runs see identical batches."""
    dm = CIFAR10DataModule(
        data_dir=str(cifar_root), batch_size=64, val_size=500, crop_padding=0, flip=False
    )
    dm.setup()
    return dm


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_steps=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        use_distributed_sampler=False,
    )
    return L.Trainer(**{**defaults, **kwargs})


def _fit(tmp_path: Path, data: CIFAR10DataModule, model: ImageClassifier, **kwargs):
    L.seed_everything(0)
    _trainer(tmp_path, **kwargs).fit(model, data)
    return model


def _optimizer(name: str, **kwargs):
    cls = getattr(torch.optim, name)
    return lambda params: cls(params, **kwargs)


def _twin(arch: str = "lenet5", **kwargs) -> tuple[ImageClassifier, dict]:
    torch.manual_seed(0)
    model = ImageClassifier(arch, num_classes=10, image_size=32, **kwargs)
    return model, copy.deepcopy(model.model.state_dict())


def _weights(model: ImageClassifier) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.model.parameters()]


def test_sgd_weight_decay_equals_an_explicit_l2_penalty_but_adamw_does_not(
    tmp_path: Path, data: CIFAR10DataModule
) -> None:
    lam = 5e-2  # large, so a wrong factor (lambda instead of lambda/2) shows

    def run(opt: str, weight_decay: float = 0.0, l2_penalty: float = 0.0, **kwargs):
        model, _ = _twin(
            optimizer=_optimizer(opt, weight_decay=weight_decay, **kwargs), l2_penalty=l2_penalty
        )
        return _weights(_fit(tmp_path, data, model))

    sgd = dict(lr=0.05, momentum=0.9)
    decay, penalty, plain = run("SGD", lam, **sgd), run("SGD", 0, lam, **sgd), run("SGD", **sgd)
    for a, b in zip(decay, penalty, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(a, c, atol=1e-4) for a, c in zip(decay, plain, strict=True))
    # torch's Adam(weight_decay) is the same coupled L2 term; AdamW decouples it.
    adam_penalty, adamw = run("Adam", 0, lam, lr=1e-3), run("AdamW", lam, lr=1e-3)
    assert any(
        not torch.allclose(a, b, atol=1e-5) for a, b in zip(adam_penalty, adamw, strict=True)
    )


def test_batchnorm_only_training_moves_only_batchnorm(
    tmp_path: Path, data: CIFAR10DataModule
) -> None:
    model, initial = _twin("resnet18", trainable="batchnorm")
    images = torch.randn(4, 3, 32, 32)
    model.model(images).sum().backward()
    for name, module in model.model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            is_bn = isinstance(module, nn.BatchNorm2d)
            assert (p.grad is not None) == is_bn, f"{name}.{pname}"
    model.model.zero_grad(set_to_none=True)
    _fit(tmp_path, data, model, max_steps=1)
    moved = {k for k, v in model.model.state_dict().items() if not torch.equal(v, initial[k])}
    modules = dict(model.model.named_modules())
    assert moved and all(isinstance(modules[k.rsplit(".", 1)[0]], nn.BatchNorm2d) for k in moved)
    assert any(k.endswith("weight") for k in moved)


@pytest.mark.parametrize(
    ("trainable", "kind"), [("all", nn.Module), ("batchnorm", nn.BatchNorm2d), ("head", nn.Linear)]
)
def test_the_run_record_counts_the_trainable_parameters(
    tmp_path: Path, data: CIFAR10DataModule, trainable: str, kind: type
) -> None:
    model, _ = _twin("resnet8", trainable=trainable)
    _fit(tmp_path, data, model, max_steps=1, callbacks=[RunSummary()])
    (path,) = tmp_path.rglob("metrics.json")
    record = json.loads(path.read_text())
    layers = [m for m in model.model.modules() if isinstance(m, kind)]
    expected = sum(p.numel() for m in layers for p in m.parameters(recurse=False))
    assert record["trainable_params"] == expected
    assert record["params"] == 78_042  # every parameter, trained or not
    assert (expected == 78_042) == (trainable == "all")


def test_bf16_mixed_precision_trains_on_cpu(tmp_path: Path, data: CIFAR10DataModule) -> None:
    model, initial = _twin()
    dtypes = []
    model.model.features[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    _fit(tmp_path, data, model, precision="bf16-mixed", max_steps=3)
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    after = model.model.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in initial.items())
    assert all(torch.isfinite(v).all() for v in after.values())


def test_ema_is_evaluated_alongside_the_raw_weights(
    tmp_path: Path, data: CIFAR10DataModule
) -> None:
    model, _ = _twin(ema_decay=0.9)
    trainer = _trainer(tmp_path, max_steps=5, limit_val_batches=1)
    L.seed_everything(0)
    trainer.fit(model, data)
    trainer.validate(model, data, verbose=False)
    metrics = trainer.callback_metrics
    assert {"val/acc1", "val/ema_acc1", "val/ema_acc5"} <= set(metrics)
    raw, ema = model.model.state_dict(), model.ema.module.state_dict()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)
    # decay 0.9 after 5 updates: the average lies between the start and the end
    assert all(torch.isfinite(v).all() for v in ema.values())


def test_channels_last_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    plain = ImageClassifier("resnet18", num_classes=10, image_size=32).eval()
    nhwc = ImageClassifier("resnet18", num_classes=10, image_size=32, channels_last=True).eval()
    nhwc.model.load_state_dict(plain.model.state_dict())
    conv = next(m for m in nhwc.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(nhwc(x), plain(x), rtol=1e-4, atol=1e-5)


def test_learning_rate_scales_with_the_global_batch(
    tmp_path: Path, data: CIFAR10DataModule
) -> None:
    for rule, expected in (("none", 1.0), ("linear", 0.25), ("sqrt", 0.5)):
        model, _ = _twin(optimizer=_optimizer("SGD", lr=0.4), lr_scaling=rule, base_batch_size=256)
        _fit(tmp_path, data, model, max_steps=1)
        assert model.global_batch_size() == 64
        lr = model.trainer.optimizers[0].param_groups[0]["lr"]
        assert lr == pytest.approx(0.4 * expected)


def test_learning_rate_scales_with_the_global_batch_of_an_image_tree(tmp_path: Path) -> None:
    """The ImageFolder DataModule's batch counts too (its learning rate was scaled to 0)."""
    from tests.data.image_trees import make_tree

    tree = make_tree(tmp_path / "tree", train_per_class=12, awkward=False, broken=False)
    data = ImageNetDataModule(
        data_dir=str(tmp_path),
        folder="tree",
        batch_size=8,
        image_size=32,
        eval_resize=32,
        val_per_class=2,
        num_workers=0,
    )
    model = ImageClassifier(
        "lenet5",
        num_classes=3,
        image_size=32,
        optimizer=_optimizer("SGD", lr=0.4),
        lr_scaling="linear",
        base_batch_size=256,
    )
    _fit(tmp_path, data, model, max_steps=1)
    assert tree.is_dir() and model.global_batch_size() == 8
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.4 * 8 / 256)


class _NaNAfter(CIFAR10DataModule):
    """Real CIFAR-10 batches, the fourth of which carries a NaN: a real divergence."""

    def on_after_batch_transfer(self, batch, dataloader_idx):
        images, labels = super().on_after_batch_transfer(batch, dataloader_idx)
        if self.trainer.training and self.trainer.global_step == 3:
            images = images.clone()
            images[0, 0, 0, 0] = float("nan")
        return images, labels


def test_non_finite_loss_stops_before_a_checkpoint_stores_it(
    tmp_path: Path, cifar_root: Path
) -> None:
    model, _ = _twin(optimizer=_optimizer("SGD", lr=0.01))
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=1
    )
    trainer = _trainer(
        tmp_path, max_steps=10, enable_checkpointing=True, callbacks=[StopOnNonFinite(), checkpoint]
    )
    nan_data = _NaNAfter(data_dir=str(cifar_root), batch_size=64, val_size=500)
    with pytest.raises(NonFiniteLossError, match=r"train/loss is nan at step 4 .*last\.ckpt"):
        trainer.fit(model, nan_data)
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert last["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_weight_initialisation_is_chosen_by_name() -> None:
    model = ImageClassifier(
        "mlp",
        num_classes=10,
        image_size=32,
        init="lecun_normal",
        arch_kwargs={"depth": 2, "width": 512},
    )
    first = next(m for m in model.model.modules() if isinstance(m, nn.Linear))
    assert first.weight.std().item() == pytest.approx((1 / 3072) ** 0.5, rel=0.02)
    assert torch.count_nonzero(first.bias) == 0
    with pytest.raises(ValueError, match="unknown init scheme"):
        ImageClassifier("lenet5", init="glorot")


@pytest.mark.parametrize("arch", ["lenet5", "resnet18"])
def test_the_model_summary_counts_real_flops(arch: str) -> None:
    """An example input of the data's shape: the summary shows 2 FLOPs per multiply-add."""
    from lightning.pytorch.utilities.model_summary import ModelSummary

    from cnn_bench.models.macs import model_macs

    model = ImageClassifier(arch, num_classes=10, image_size=32)
    assert ModelSummary(model).total_flops == 2 * model_macs(model, (1, 3, 32, 32)) > 0
    # and both DataModules pass that bare tensor through untouched
    for data in (CIFAR10DataModule(), ImageNetDataModule()):
        assert data.on_after_batch_transfer(model.example_input_array, 0) is (
            model.example_input_array
        )
