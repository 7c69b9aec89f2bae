"""Every training option and reported number against a computation made here, by hand.

Each test recomputes what the option promises from the same inputs the run saw (the
weights before a step, the batch it trained on, the random state of its dropout), so a
wrong constant, a missing term or a shifted index fails here, not in a long run.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from cnn_bench.callbacks import NonFiniteLossError, StopOnNonFinite
from cnn_bench.checkpoint import AtomicCheckpointIO
from cnn_bench.data import CIFAR10DataModule
from cnn_bench.module import ImageClassifier

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(cifar_root: Path) -> CIFAR10DataModule:
    dm = CIFAR10DataModule(data_dir=str(cifar_root), batch_size=16, eval_batch_size=100)
    dm.setup()
    return dm


def _trainer(tmp_path: Path, callbacks: list | None = None, **kwargs) -> L.Trainer:
    settings = dict(
        accelerator="cpu",
        devices=1,
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        use_distributed_sampler=False,
        callbacks=callbacks or [],
    )
    return L.Trainer(**{**settings, **kwargs})


def _model(arch: str = "lenet5", **kwargs) -> ImageClassifier:
    torch.manual_seed(0)
    kwargs.setdefault("optimizer", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9))
    return ImageClassifier(arch, num_classes=10, image_size=32, **kwargs)


class _Recorder(L.Callback):
    """What each training step saw: weights and RNG state before it, the batch, the loss,
    and the weights after the optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps.append(
            {
                "before": {k: v.clone() for k, v in pl_module.model.state_dict().items()},
                "rng": torch.get_rng_state(),
            }
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.steps[-1].update(
            images=batch[0].clone(),
            labels=batch[1].clone(),
            loss=loss.detach().clone(),
            after=[p.detach().clone() for p in pl_module.model.parameters()],
        )


def _replay(model: ImageClassifier, step: dict) -> tuple[Tensor, ...] | Tensor:
    """The network's training-mode output for a recorded step, from its weights and RNG."""
    model.model.load_state_dict(step["before"])
    model.model.train()
    torch.set_rng_state(step["rng"])
    return model.model(step["images"])


def _cross_entropy(logits: Tensor, labels: Tensor, smoothing: float = 0.0) -> Tensor:
    """Szegedy et al.'s smoothed cross-entropy, written out: (1 - e) * nll + e * mean(-log p)."""
    logp = logits.log_softmax(dim=1)
    nll = -logp[torch.arange(len(labels)), labels]
    return ((1 - smoothing) * nll + smoothing * (-logp.mean(dim=1))).mean()


def test_ema_is_the_average_of_the_weights_computed_by_hand(
    tmp_path: Path, data: CIFAR10DataModule
) -> None:
    decay = 0.8
    model, recorder = _model(ema_decay=decay), _Recorder()
    _trainer(tmp_path, [recorder], max_steps=4).fit(model, data)
    expected = recorder.steps[0]["after"]  # the first update copies the weights
    for step in recorder.steps[1:]:
        expected = [
            decay * e + (1 - decay) * w for e, w in zip(expected, step["after"], strict=True)
        ]
    ema = [p.detach() for p in model.ema.module.parameters()]
    raw = [p.detach() for p in model.model.parameters()]
    for e, got in zip(expected, ema, strict=True):
        torch.testing.assert_close(got, e, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(e, r) for e, r in zip(ema, raw, strict=True))


def test_googlenet_loss_is_main_plus_weighted_auxiliary_losses(
    tmp_path: Path, cifar_root: Path
) -> None:
    small = CIFAR10DataModule(data_dir=str(cifar_root), batch_size=4)
    model = _model("googlenet", arch_kwargs={"aux_logits": True})
    recorder = _Recorder()
    _trainer(tmp_path, [recorder], max_steps=1).fit(model, small)
    step = recorder.steps[0]
    main, aux2, aux1 = _replay(_model("googlenet", arch_kwargs={"aux_logits": True}), step)
    labels = step["labels"]
    expected = _cross_entropy(main, labels) + 0.3 * (
        _cross_entropy(aux1, labels) + _cross_entropy(aux2, labels)
    )
    torch.testing.assert_close(step["loss"], expected.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(step["loss"], _cross_entropy(main, labels).detach())


def test_training_loss_uses_label_smoothing_and_the_l2_penalty(
    tmp_path: Path, data: CIFAR10DataModule
) -> None:
    lam, eps = 1e-2, 0.1
    model, recorder = _model(label_smoothing=eps, l2_penalty=lam), _Recorder()
    _trainer(tmp_path, [recorder], max_steps=2).fit(model, data)
    replayed = _model()
    for step in recorder.steps:
        logits = _replay(replayed, step)
        squares = sum(p.pow(2).sum() for p in replayed.model.parameters())
        expected = _cross_entropy(logits, step["labels"], eps) + lam / 2 * squares
        torch.testing.assert_close(step["loss"], expected.detach(), rtol=1e-5, atol=1e-6)


def test_evaluation_reports_top1_top5_and_a_loss_without_the_penalty(
    tmp_path: Path, data: CIFAR10DataModule
) -> None:
    model = _model(l2_penalty=1.0)  # a large penalty: it would dominate the loss if added
    trainer = _trainer(tmp_path, limit_val_batches=3)
    logged = trainer.validate(model, data, verbose=False)[0]
    model.eval()
    hits1 = hits5 = loss_sum = count = 0
    with torch.no_grad():
        for i, batch in enumerate(data.val_dataloader()):
            if i == 3:
                break
            images, labels = data.on_after_batch_transfer(batch, 0)
            logits = model(images)
            top5 = logits.topk(5, dim=1).indices
            hits1 += int((top5[:, 0] == labels).sum())
            hits5 += int((top5 == labels[:, None]).any(dim=1).sum())
            loss_sum += float(_cross_entropy(logits, labels)) * len(labels)
            count += len(labels)
    assert hits1 != hits5  # the two numbers differ on this batch, so a swap shows
    assert logged["val/acc1"] == pytest.approx(hits1 / count)
    assert logged["val/acc5"] == pytest.approx(hits5 / count)
    assert logged["val/loss"] == pytest.approx(loss_sum / count, rel=1e-5)
    # The same values are what the progress bar shows after each validation.
    shown = trainer.progress_bar_metrics
    assert shown["val/acc1"] == pytest.approx(hits1 / count)
    assert shown["val/loss"] == pytest.approx(loss_sum / count, rel=1e-5)


def test_top1_and_top5_on_a_hand_made_batch() -> None:
    model = ImageClassifier("lenet5", num_classes=10, image_size=32)
    metrics = model.metrics["val_metrics"]
    logits = torch.tensor(
        [
            [9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0],  # label 0: first
            [9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0],  # label 2: third, in the top five only
            [9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0],  # label 9: last, in neither
            [0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9],  # label 5: fifth, in the top five only
        ]
    )
    metrics.update(logits, torch.tensor([0, 2, 9, 5]))
    result = {k: float(v) for k, v in metrics.compute().items()}
    assert result == {"val/acc1": 0.25, "val/acc5": 0.75}


@pytest.mark.parametrize(("interval", "expected"), [("step", 2 * 3), ("epoch", 2)])
def test_total_steps_is_filled_with_the_length_the_schedule_counts_in(
    tmp_path: Path, data: CIFAR10DataModule, interval: str, expected: int
) -> None:
    schedule = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=None)
    model = _model(lr_scheduler=schedule, scheduler_interval=interval)
    trainer = _trainer(tmp_path, max_steps=-1, max_epochs=2, limit_train_batches=3)
    trainer.fit(model, data)
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == expected
    assert trainer.lr_scheduler_configs[0].interval == interval


def test_learning_rate_scaling_counts_accumulation_and_scales_one_cycle_peak(
    tmp_path: Path, data: CIFAR10DataModule
) -> None:
    schedule = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.4, total_steps=None)
    model = _model(lr_scheduler=schedule, lr_scaling="linear", base_batch_size=256)
    trainer = _trainer(
        tmp_path, accumulate_grad_batches=4, max_steps=-1, max_epochs=1, limit_train_batches=8
    )
    trainer.fit(model, data)
    assert model.global_batch_size() == 16 * 4  # per device x processes (1) x accumulation
    group = trainer.optimizers[0].param_groups[0]
    assert group["max_lr"] == pytest.approx(0.4 * 64 / 256)


class _NaNAtStep(CIFAR10DataModule):
    """Real CIFAR-10 batches; the one at step 3 carries a NaN: a real divergence."""

    def on_after_batch_transfer(self, batch, dataloader_idx):
        images, labels = super().on_after_batch_transfer(batch, dataloader_idx)
        if self.trainer.training and self.trainer.global_step == 3:
            images = images.clone()
            images[0, 0, 0, 0] = float("nan")
        return images, labels


def test_non_finite_loss_stops_within_its_check_interval(tmp_path: Path, cifar_root: Path) -> None:
    """No checkpoint and no epoch end comes before step 200, so only the periodic check
    can stop the run in time."""
    every = StopOnNonFinite().every_n_steps
    seen = []

    class Steps(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            seen.append(trainer.global_step)

    model = _model()
    trainer = _trainer(tmp_path, [StopOnNonFinite(), Steps()], max_steps=200)
    nan_data = _NaNAtStep(data_dir=str(cifar_root), batch_size=16)
    with pytest.raises(NonFiniteLossError, match="at step 4"):
        trainer.fit(model, nan_data)
    assert every == 50 and seen[-1] <= 4 + every


def test_the_default_config_keeps_its_promises(
    tmp_path: Path, cifar_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What every run relies on without saying so: atomic checkpoint writes, the crop
    padding of the standard CIFAR recipe, an experiment's label smoothing in the loss."""
    from cnn_bench.cli import cli, resolved_config

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    experiment = REPO / "configs" / "experiment" / "lenet5_cifar10.yaml"
    run = cli(["--config", str(experiment), "--data.data_dir", str(cifar_root)], run=False)
    assert isinstance(run.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert run.datamodule.hparams.crop_padding == 4 and run.datamodule.hparams.flip
    # The fast recipe's label smoothing reaches the loss.
    fast = REPO / "configs" / "experiment" / "fast_cifar10.yaml"
    smoothing = resolved_config(["--config", str(fast)])["model"]["label_smoothing"]
    run = cli(["--config", str(fast), "--data.data_dir", str(cifar_root)], run=False)
    assert smoothing > 0 and run.model.criterion.label_smoothing == pytest.approx(smoothing)
    logits, labels = torch.randn(8, 10), torch.arange(8)
    torch.testing.assert_close(
        run.model.criterion(logits, labels), _cross_entropy(logits, labels, smoothing)
    )


def test_the_cifar_datamodule_crops_with_four_pixels_of_padding_by_default(
    data: CIFAR10DataModule, cifar_root: Path
) -> None:
    """Each augmented image is its original, maybe mirrored, shifted by at most 4 pixels
    with zeros coming in; over 256 images every shift from -4 to 4 occurs."""
    default = CIFAR10DataModule(data_dir=str(cifar_root))
    images = data.datasets["train"].images[:256]
    out = default.augment(images, torch.Generator().manual_seed(0))
    padded = F.pad(images, (4, 4, 4, 4))
    shifts = set()
    for i in range(len(images)):
        found = [
            (dy, dx)
            for flip in (False, True)
            for dy in range(9)
            for dx in range(9)
            if torch.equal(
                (padded[i].flip(2) if flip else padded[i])[:, dy : dy + 32, dx : dx + 32], out[i]
            )
        ]
        assert found, f"image {i} is no shifted copy of its original"
        shifts.update(d - 4 for d in found[0])
    assert shifts == set(range(-4, 5))


SABOTAGE = '''
import lightning as L
import torch


class ZeroTheLastEpoch(L.Callback):
    """From the second epoch on the weights are zero and stay there: the last checkpoint
    is worse than the best one, by construction."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch >= 1:
            with torch.no_grad():
                for p in pl_module.model.parameters():
                    p.zero_()
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = 0.0
'''


def test_test_after_fit_tests_the_best_checkpoint_not_the_last(
    tmp_path: Path, cli_env: dict
) -> None:
    from tests.conftest import run_cli

    (tmp_path / "sabotage.py").write_text(SABOTAGE)
    experiment = REPO / "configs" / "experiment" / "lenet5_cifar10.yaml"
    env = {**cli_env, "PYTHONPATH": f"{tmp_path}:{REPO}"}
    done = run_cli(
        [
            "fit",
            "--config",
            str(experiment),
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=60",
            "--trainer.limit_val_batches=4",
            "--trainer.limit_test_batches=4",
            "--trainer.callbacks+=sabotage.ZeroTheLastEpoch",
            "--test_after_fit=true",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("cnn_bench/*/metrics.json")]
    val = [row["val/acc1"] for row in record["history"]]
    assert val[0] > 0.15 and val[1] == pytest.approx(0.1, abs=0.05)  # zeros: one class
    assert "epoch000" in record["checkpoint"] and record["test"]["test/acc1"] > 0.15


def test_flip_tta_accuracy_recomputed_from_the_saved_checkpoint(
    tmp_path: Path, data: CIFAR10DataModule
) -> None:
    from cnn_bench.data.tta import TTAConfig

    model = _model()
    trainer = _trainer(tmp_path, max_steps=30)
    trainer.fit(model, data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    tested = ImageClassifier.load_from_checkpoint(path, tta=TTAConfig(views="flip"))
    logged = _trainer(tmp_path, limit_test_batches=2).test(tested, data, verbose=False)[0]

    by_hand = ImageClassifier.load_from_checkpoint(path).eval()
    plain = tta = count = 0
    with torch.no_grad():
        for i, batch in enumerate(data.test_dataloader()):
            if i == 2:
                break
            images, labels = data.on_after_batch_transfer(batch, 0)
            probs = by_hand(images).softmax(1)
            mirrored = by_hand(images.flip(3)).softmax(1)
            plain += int((probs.argmax(1) == labels).sum())
            tta += int(((probs + mirrored) / 2).argmax(1).eq(labels).sum())
            count += len(labels)
    assert logged["test/acc1"] == pytest.approx(plain / count)
    assert logged["test/tta_acc1"] == pytest.approx(tta / count)
    assert plain != tta  # the views changed some predictions, so the check has teeth
