"""The W&B logger of every run: Lightning's, without the setting W&B warns about."""

from __future__ import annotations

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger``, minus the ``anonymous=None`` it always passes to
    ``wandb.init`` (W&B then warns, on every run, that the setting has no effect)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
