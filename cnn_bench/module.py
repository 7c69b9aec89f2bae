"""``ImageClassifier``: the one LightningModule, for every registered network.

The network is built by name from the registry, so a checkpoint describes itself:
``ImageClassifier.load_from_checkpoint(path)`` rebuilds the same architecture.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveFloat
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from cnn_bench import rng
from cnn_bench import tta as test_time
from cnn_bench.averaging import EMA, TopKAccuracy
from cnn_bench.checkpoint import check_hyper_parameters, read_checkpoint
from cnn_bench.data.base import ImageDataModule
from cnn_bench.data.common import data_description
from cnn_bench.data.sampling import batch_seed
from cnn_bench.ensemble import EnsembleConfig, EnsembleError, combine, load_members, member_paths
from cnn_bench.losses import make_loss
from cnn_bench.models import AUX_LOSS_WEIGHT, create_model, init_weights, split_aux
from cnn_bench.models.init import InitScheme
from cnn_bench.models.pretrained import PretrainedError, head_parameter_names, load_pretrained
from cnn_bench.schedules import bind_run_length, check_resumed_length
from cnn_bench.tta import TTAConfig

STAGES = ("train", "val", "test")
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class ImageClassifier(L.LightningModule):
    """Any registered architecture trained with cross-entropy (or squared loss), reporting
    top-1 and top-5 (``acc1``, ``acc5``; top-5 only with more than 5 classes, where it can
    be below 1).

    Args:
        arch: registered model name (``cnn-bench models`` lists them) or ``timm/<name>``.
        num_classes: linked from the DataModule; never set it by hand in a config.
        in_chans: input channels, linked from the DataModule.
        image_size: input side in pixels, linked from the DataModule; picks the CIFAR or
            ImageNet variant of networks that have both.
        arch_kwargs: keyword arguments of the architecture (``variant``, ``dropout``, ...).
        init: weight initialisation of conv and linear layers (biases zero): ``default``
            (the family's own), ``pytorch`` (PyTorch's, biases too), ``lecun_normal``,
            ``xavier_normal``, ``xavier_uniform``, ``kaiming_{normal,uniform}_fan_{in,out}``.
        loss: the training objective: ``cross_entropy``, or ``squared`` loss on one-hot
            targets on the raw outputs (``cnn_bench.losses.SquaredLoss``; Belkin et al.
            2019). Validation and test losses are the same objective.
        label_smoothing: label smoothing of the targets (Szegedy et al. 2016), with
            either loss.
        aux_loss_weight: weight of auxiliary classifier losses (GoogLeNet: 0.3).
        l2_penalty: ``lambda`` of an explicit ``(lambda / 2) * ||theta||^2`` added to the
            loss. For SGD it equals ``weight_decay=lambda`` (so does torch's coupled
            ``Adam(weight_decay)``); AdamW's decoupled decay is a different update.
        ema_decay: keep an exponential moving average of the weights with this decay and
            evaluate it alongside the raw weights (``val/ema_acc1``, ``test/ema_acc1``).
        trainable: ``all`` parameters, ``batchnorm`` only (every other weight stays at
            its initialisation; Frankle et al. 2021), or the classifier ``head`` only
            (linear probing of pretrained features).
        pretrained: start from these weights: a checkpoint or state-dict file,
            ``torchvision:<weights>`` or ``timm:<name>`` (from the local caches). With
            another number of classes the head keeps its fresh initialisation.
        freeze_backbone_epochs: train only the head for this many epochs, then everything
            (fine-tuning; one process: DDP cannot add parameters to a running reducer).
        backbone_lr_scale: learning rate of everything but the head, relative to the
            configured one (e.g. 0.1 for fine-tuning).
        channels_last: NHWC memory format for the network and its inputs (faster convs with
            mixed precision on tensor cores).
        compile: ``torch.compile`` the network (its state-dict keys do not change).
        lr_scaling: scale the optimizer's learning rate with the global batch size
            (``linear``: Goyal et al. 2017; ``sqrt``), relative to ``base_batch_size``.
        base_batch_size: the global batch size the configured learning rate is meant for.
        optimizer: any ``torch.optim`` optimizer, as ``class_path``/``init_args``.
        lr_scheduler: any ``torch.optim.lr_scheduler`` or ``cnn_bench.schedules`` class;
            a ``total_steps`` left empty is filled with the run's length.
        scheduler_interval: step the schedule per optimizer ``step`` or per ``epoch``.
        tta: test-time augmentation views; ``test`` then logs ``test/tta_acc1`` and
            ``test/tta_acc5`` beside the plain ``test/acc1`` and ``test/acc5``. Not saved
            with the checkpoint: it is chosen when testing.
        ensemble: other checkpoints to test and predict with this one
            (``cnn_bench/ensemble.py``): ``test/ensemble_acc1`` and each member's own
            ``test/member<i>_acc1``. Not saved with the checkpoint either.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        num_classes: int = 10,
        in_chans: int = 3,
        image_size: int | None = None,
        arch_kwargs: dict[str, Any] | None = None,
        init: InitScheme = "default",
        loss: Literal["cross_entropy", "squared"] = "cross_entropy",
        label_smoothing: ClosedUnitInterval = 0.0,
        aux_loss_weight: float = AUX_LOSS_WEIGHT,
        l2_penalty: float = 0.0,
        ema_decay: ClosedUnitInterval | None = None,
        trainable: Literal["all", "batchnorm", "head"] = "all",
        pretrained: str | None = None,
        freeze_backbone_epochs: NonNegativeInt = 0,
        backbone_lr_scale: PositiveFloat = 1.0,
        channels_last: bool = False,
        compile: bool = False,
        lr_scaling: Literal["none", "linear", "sqrt"] = "none",
        base_batch_size: int = 256,
        optimizer: OptimizerCallable = torch.optim.SGD,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
        tta: TTAConfig | None = None,
        ensemble: EnsembleConfig | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "tta", "ensemble"])
        self.model = create_model(
            arch,
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=image_size,
            **(arch_kwargs or {}),
        )
        init_weights(self.model, init)  # which refuses an unknown scheme
        if pretrained:
            load_pretrained(self.model, pretrained, num_classes)
        self.head_names = head_parameter_names(self.model, num_classes)
        if trainable == "batchnorm":
            for module in self.model.modules():
                for p in module.parameters(recurse=False):
                    p.requires_grad_(isinstance(module, _BATCHNORM))
        elif trainable == "head":
            for name, p in self.model.named_parameters():
                p.requires_grad_(name in self.head_names)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.ema = EMA(self.model, ema_decay) if ema_decay is not None else None
        if image_size and not compile:
            # One image of the data's shape: the model summary then shows real FLOPs.
            self.example_input_array = torch.zeros(1, in_chans, image_size, image_size)
        if compile:
            self.model.compile()
        self.criterion = make_loss(loss, label_smoothing)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self._planned_schedule_length: int | None = None  # the schedule's total_steps, if any
        self.scheduler_interval = scheduler_interval
        # ``nn.Module`` reserves the name ``train``, hence the ``_metrics`` suffix.
        self.metrics = nn.ModuleDict(
            {f"{stage}_metrics": self._accuracies(f"{stage}/") for stage in STAGES}
        )
        self.eval_loss = nn.ModuleDict({stage: MeanMetric() for stage in STAGES[1:]})
        # Training accuracy accumulates over an epoch: keep it in checkpoints so an epoch
        # resumed from a mid-epoch checkpoint reports the same value as an uninterrupted one.
        self.metrics["train_metrics"].persistent(True)
        self._train_metrics_epoch: int | None = None
        if self.ema is not None:
            self.ema_metrics = nn.ModuleDict(
                {f"{stage}_metrics": self._accuracies(f"{stage}/ema_") for stage in STAGES[1:]}
            )
        self.tta = tta
        if tta is not None:
            self.metrics["test_tta_metrics"] = self._accuracies("test/tta_")
        self.ensemble = ensemble
        self._members: list[ImageClassifier] = []  # loaded when testing starts; not saved
        if ensemble is not None:
            if ensemble.average == "logits" and tta is not None and tta.average == "probs":
                raise EnsembleError(
                    "an ensemble averaging logits needs --model.tta.average logits as well"
                )
            self._member_paths = member_paths(ensemble)
            self.metrics["test_ensemble_metrics"] = self._accuracies("test/ensemble_")
            for i in range(1, len(self._member_paths) + 1):
                self.metrics[f"test_member{i}_metrics"] = self._accuracies(f"test/member{i}_")
            for k in range(1, len(self._member_paths) + 2) if ensemble.cumulative else ():
                name = f"test/ensemble_k{k}_"
                self.metrics[f"test_ensemble_k{k}_metrics"] = self._accuracies(name)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning names the hook it is in, before and after each of the ~50 hooks of a
        # training step; nn.Module's __setattr__ first checks every value against the
        # parameters, buffers and submodules (1.6 us each on a CPU). A name is none of them.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _accuracies(self, prefix: str) -> MetricCollection:
        # Top-5 only where it says something: with 5 classes or fewer it is always 1.
        ks = (1, 5) if self.hparams.num_classes > 5 else (1,)
        return MetricCollection({f"acc{k}": TopKAccuracy(k) for k in ks}, prefix=prefix)

    def forward(self, x: Tensor) -> Tensor:
        return split_aux(self.model(x.contiguous(memory_format=self.memory_format)))[0]

    def model_step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Forward and loss, the same in every stage: ``(loss, logits, hard labels)``.
        The loss includes auxiliary classifiers (GoogLeNet) at ``aux_loss_weight``."""
        images, labels = batch
        logits, aux = split_aux(self.model(images.contiguous(memory_format=self.memory_format)))
        loss = self.criterion(logits, labels)
        for aux_logits in aux:
            loss = loss + self.hparams.aux_loss_weight * self.criterion(aux_logits, labels)
        # Mixup and cutmix give soft labels; accuracy counts their dominant class.
        hard_labels = labels.argmax(dim=1) if labels.dim() == 2 else labels
        return loss, logits, hard_labels

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, logits, labels = self.model_step(batch)
        if self.hparams.l2_penalty:  # part of the objective, so never in evaluation losses
            squares = sum(p.pow(2).sum() for p in self.model.parameters() if p.requires_grad)
            loss = loss + 0.5 * self.hparams.l2_penalty * squares
        # Metric objects are logged, not values: they accumulate on the device and
        # synchronise once per epoch, so no step waits for the device.
        metrics = self.metrics["train_metrics"]
        metrics.update(logits, labels)
        # The learning curve, on the steps the loggers write (every log_every_n_steps)
        # and at the end of each epoch (for callbacks that monitor it): a value logged
        # on any other step would be dropped after costing a millisecond.
        trainer = self.trainer
        if (self.global_step + 1) % trainer.log_every_n_steps == 0 or trainer.is_last_batch:
            # Not prog_bar: Lightning would read it back every batch (a device
            # sync); cnn_bench.callbacks.ProgressBar shows it on these steps.
            self.log("train/loss", loss, on_step=True, on_epoch=False)
        # Registering a metric object once an epoch is enough: Lightning computes and resets
        # it at the epoch's end. Re-registering it every training step costs more than a
        # small network's forward pass on a CPU.
        if self._train_metrics_epoch != self.current_epoch:
            self.log_dict(metrics, on_step=False, on_epoch=True)
            self._train_metrics_epoch = self.current_epoch
        return loss

    def _evaluation_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        """Loss and accuracies of ``stage`` (val or test), per epoch; returns the logits."""
        loss, logits, labels = self.model_step(batch)
        # Per epoch, weighted by batch size and summed over all processes: exact.
        self.eval_loss[stage].update(loss.detach(), weight=len(labels))
        shown = stage == "val"  # val/loss, val/acc1 and val/acc5 in the progress bar
        self.log(
            f"{stage}/loss", self.eval_loss[stage], on_step=False, on_epoch=True, prog_bar=shown
        )
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(logits, labels)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=shown)
        if self.ema is not None:
            ema_metrics = self.ema_metrics[f"{stage}_metrics"]
            images = batch[0].contiguous(memory_format=self.memory_format)
            ema_metrics.update(self.ema(images), labels)
            self.log_dict(ema_metrics, on_step=False, on_epoch=True)
        return logits

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        images, labels = batch
        # Test batches may be larger than the network's input, for five- and ten-crop
        # views; the plain prediction is of their centre crop.
        crop = test_time.center_crop(images, self.hparams.image_size)
        logits = self._evaluation_step((crop, labels), "test")
        own = None
        if self.tta is not None:
            own = self._tta_step(images, labels, batch_idx)
        if self.ensemble is not None:
            self._ensemble_step(images, labels, batch_idx, logits if own is None else own)
        # Returned for the callbacks (TestPredictions: confusion matrix, worst mistakes).
        return {"logits": logits, "labels": labels}

    def _tta_step(self, images: Tensor, labels: Tensor, batch_idx: int) -> Tensor:
        scores = self._tta_scores(images, batch_idx)
        metrics = self.metrics["test_tta_metrics"]
        metrics.update(scores, labels)
        self.log_dict(metrics, on_step=False, on_epoch=True)
        return scores

    def _tta_scores(self, images: Tensor, batch_idx: int, net: Any = None) -> Tensor:
        net = self if net is None else net
        generator = torch.Generator(images.device).manual_seed(batch_seed(self.tta.seed, batch_idx))
        datamodule = self.trainer.datamodule
        augment = datamodule.tta_augment if isinstance(datamodule, ImageDataModule) else None
        return test_time.predict(net, images, self.tta, net.hparams.image_size, augment, generator)

    # -- ensembles -------------------------------------------------------------------------
    def on_test_start(self) -> None:
        if self.ensemble is not None and not self._members:
            self._members = load_members(self._member_paths, self.trainer.datamodule, self)

    def on_predict_start(self) -> None:
        self.on_test_start()

    def _scores(self, net: Any, images: Tensor, batch_idx: int) -> Tensor:
        """One network's class scores for the ensemble: probabilities, or logits with
        ``average: logits``; over the test-time views when ``tta`` is set."""
        if self.tta is not None:
            scores = self._tta_scores(images, batch_idx, net)
            return scores if self.tta.average == self.ensemble.average else scores.softmax(1)
        logits = net(test_time.center_crop(images, net.hparams.image_size)).float()
        return logits if self.ensemble.average == "logits" else logits.softmax(dim=1)

    def _ensemble_step(self, images: Tensor, labels: Tensor, batch_idx: int, own: Tensor) -> None:
        if self.tta is None and self.ensemble.average == "probs":
            own = own.float().softmax(dim=1)  # the plain logits of test_step
        members = [self._scores(member, images, batch_idx) for member in self._members]
        for i, scores in enumerate(members, start=1):
            metrics = self.metrics[f"test_member{i}_metrics"]
            metrics.update(scores, labels)
            self.log_dict(metrics, on_step=False, on_epoch=True)
        scores = [own, *members]
        metrics = self.metrics["test_ensemble_metrics"]
        metrics.update(combine(scores, self.ensemble), labels)
        self.log_dict(metrics, on_step=False, on_epoch=True)
        for k in range(1, len(scores) + 1) if self.ensemble.cumulative else ():
            metrics = self.metrics[f"test_ensemble_k{k}_metrics"]
            metrics.update(combine(scores, self.ensemble, first=k), labels)
            self.log_dict(metrics, on_step=False, on_epoch=True)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Class probabilities (averaged over the test-time views when ``tta`` is set)
        and the true labels, for ``PredictionWriter``."""
        images, labels = batch
        if self.ensemble is not None:
            scores = [self._scores(net, images, batch_idx) for net in (self, *self._members)]
            probs = combine(scores, self.ensemble)
            probs = probs if self.ensemble.average == "probs" else probs.softmax(dim=1)
        elif self.tta is None:
            probs = self(test_time.center_crop(images, self.hparams.image_size)).float().softmax(1)
        else:
            scores = self._tta_scores(images, batch_idx)
            probs = scores if self.tta.average == "probs" else scores.softmax(dim=1)
        return {"probs": probs, "label": labels}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    # -- optimisation ----------------------------------------------------------------------
    def global_batch_size(self) -> int:
        """Images per optimizer step over all processes."""
        per_device = getattr(self.trainer.datamodule, "batch_size", None) or 0
        return per_device * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def lr_scale(self) -> float:
        ratio = self.global_batch_size() / self.hparams.base_batch_size
        return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[self.hparams.lr_scaling]

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """The head, and the rest (the backbone) at ``backbone_lr_scale`` of the rate.
        Parameters frozen for the first epochs are in the optimizer from the start."""
        later = self.hparams.freeze_backbone_epochs > 0
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad or later]
        if not later and self.hparams.backbone_lr_scale == 1.0:
            return [{"params": [p for _, p in params]}]  # one group, as a plain run has
        head = [p for n, p in params if n in self.head_names]
        backbone = [p for n, p in params if n not in self.head_names]
        groups = [{"params": head}]
        if backbone:
            groups.append({"params": backbone, "lr_scale": self.hparams.backbone_lr_scale})
        return groups

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.hparams.freeze_backbone_epochs
        if self.hparams.freeze_backbone_epochs:
            for name, p in self.model.named_parameters():
                p.requires_grad_(name in self.head_names or not frozen)

    def configure_optimizers(self) -> Any:
        if self.hparams.freeze_backbone_epochs and self.trainer.world_size > 1:
            raise PretrainedError(
                "freeze_backbone_epochs needs one process: DDP cannot start training the "
                "parameters it was built without (use --model.trainable head, or one device)"
            )
        optimizer = self.optimizer(self._parameter_groups())
        scale = self.lr_scale()
        for group in optimizer.param_groups:
            group["lr"] *= scale * group.pop("lr_scale", 1.0)
            group["initial_lr"] = group["lr"]
        self._log_batch_and_lr(optimizer, scale)
        if self.lr_scheduler is None:
            return optimizer
        length = (  # the run's length, in the unit the schedule steps in
            self.trainer.estimated_stepping_batches
            if self.scheduler_interval == "step"
            else self.trainer.max_epochs
        )
        scheduler_fn = bind_run_length(self.lr_scheduler, length, scale)
        scheduler = scheduler_fn(optimizer)
        # What this run's settings give, before a resume restores the checkpoint's length.
        self._planned_schedule_length = getattr(scheduler, "total_steps", None)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def _log_batch_and_lr(self, optimizer: torch.optim.Optimizer, scale: float) -> None:
        """Make the batch sizes and the scaling rule part of the run's hyper-parameters."""
        if self.logger is None:
            return
        self.logger.log_hyperparams(
            {
                "batch_size_per_device": getattr(self.trainer.datamodule, "batch_size", None),
                "global_batch_size": self.global_batch_size(),
                "world_size": self.trainer.world_size,
                "lr_scaling": self.hparams.lr_scaling,
                "lr_scale": scale,
                "lr": optimizer.param_groups[0]["lr"],
            }
        )

    def on_train_start(self) -> None:
        # After the checkpoint's schedule is restored and before the first step.
        if self.trainer.ckpt_path is None:
            return
        states = getattr(self, "_resumed_rng_states", None)
        if states is not None:
            rng.restore_rank_states(self.trainer, states)
            self._resumed_rng_states = None
        unit = "steps" if self.scheduler_interval == "step" else "epochs"
        for config in self.trainer.lr_scheduler_configs:
            check_resumed_length(
                config.scheduler,
                self._planned_schedule_length,
                str(self.trainer.ckpt_path),
                unit,
            )

    # -- checkpoints -----------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: Any, map_location: Any = None, **kwargs: Any
    ) -> ImageClassifier:
        # A missing, damaged, tampered or foreign file is one CheckpointError naming it,
        # never torch's advice to load with weights_only=False; loading stays weights only.
        check_hyper_parameters(read_checkpoint(checkpoint_path, mmap=True), cls, checkpoint_path)
        kwargs["weights_only"] = True
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)

    def setup(self, stage: str) -> None:
        if stage == "fit":  # after the network is built: its initialisation is every rank's
            rng.distinct_rank_streams(self.trainer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Every rank's random state (dropout, stochastic layers), so a resumed run draws
        # the same numbers on each (cnn_bench/rng.py).
        if self._trainer is not None:
            checkpoint["rng_states"] = rng.rank_states(self._trainer)
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if datamodule is not None:  # classes and normalisation, for predict and export
            checkpoint["data"] = data_description(datamodule)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        trainer = self._trainer  # None when loaded outside a Trainer (load_from_checkpoint)
        if states and trainer is not None and trainer.state.fn == "fit":
            # Given back in on_train_start: the sanity check and the training loader's
            # iterator, made after this, each draw a number the interrupted run had drawn
            # before its checkpoint.
            self._resumed_rng_states = states
