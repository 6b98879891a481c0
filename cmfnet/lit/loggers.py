"""Loggers: Lightning's W&B logger without the settings that recent W&B versions warn about."""

from __future__ import annotations

from lightning.pytorch.loggers import WandbLogger


class WandbRunLogger(WandbLogger):
    """:class:`~lightning.pytorch.loggers.WandbLogger` that leaves W&B's removed ``anonymous``
    setting out of ``wandb.init`` (Lightning passes ``anonymous=None``, which W&B >= 0.19 answers
    with "The anonymous setting has no effect"). Takes WandbLogger's arguments."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
