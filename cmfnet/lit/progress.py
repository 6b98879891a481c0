"""The progress bar of a training run."""

from __future__ import annotations

from typing import Union

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class CheckedLossProgressBar(RichProgressBar):
    """Lightning's rich progress bar, showing the training loss that the module's NaN/inf check
    has already read from the device (``pl_module.last_train_loss``).

    Lightning's own bar reads a ``prog_bar=True`` loss tensor after every step; on a GPU that
    read waits for the optimizer step to finish, and the device then idles while the host fetches
    the next batch. Takes :class:`~lightning.pytorch.callbacks.RichProgressBar`'s arguments.
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Union[int, str, float, dict[str, float]]]:
        metrics = super().get_metrics(trainer, pl_module)
        loss = getattr(pl_module, "last_train_loss", None)
        if loss is not None:
            metrics["train/loss"] = loss
        return metrics
