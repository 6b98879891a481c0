"""Per-epoch learning curves as a CSV beside the run, readable without W&B."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cmfnet.runs.io import write_text_atomic


def read_history(path: Path) -> list[dict[str, float]]:
    """Rows of a history.csv as ``{column: value}`` (``epoch`` and ``step`` as int, the rest as
    float); empty cells are left out."""
    with open(path, newline="") as handle:
        return [
            {
                k: int(float(v)) if k in ("epoch", "step") else float(v)
                for k, v in row.items()
                if v not in ("", None)
            }
            for row in csv.DictReader(handle)
        ]


def history_csv(rows: list[dict[str, float]]) -> str:
    """CSV text with ``epoch, step, train/loss, lr`` first and the val metrics after, sorted."""
    first = ["epoch", "step", "train/loss", "lr"]
    rest = sorted({k for row in rows for k in row} - set(first))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=first + rest, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


class EpochHistoryWriter(L.Callback):
    """After every training epoch, append one row to ``path``: the epoch, the global step, the
    mean training loss over the epoch, the learning rate and every ``val/*`` metric.

    The file is rewritten whole each epoch (atomically). On resume, rows from epochs at or after
    the resumed epoch are dropped, so a killed and resumed run has each epoch once.
    """

    def __init__(self, path: str):
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []
        self._loss_sum: torch.Tensor | float = 0.0
        self._loss_count: torch.Tensor | int = 0
        self._validated = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        old = read_history(self.path) if self.path.is_file() else []
        self.rows = [row for row in old if row["epoch"] < trainer.current_epoch]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss_sum, self._loss_count = 0.0, 0
        self._validated = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = self._validated or not trainer.sanity_checking

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):  # stays on the device: no sync per step
            finite = torch.isfinite(
                loss.detach()
            )  # a batch skipped by module.skip_nonfinite is left out
            self._loss_sum = self._loss_sum + torch.where(finite, loss.detach(), 0.0)
            self._loss_count = self._loss_count + finite.long()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        row: dict[str, float] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        if int(self._loss_count):
            row["train/loss"] = float(self._loss_sum) / int(self._loss_count)
        if trainer.optimizers:
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        if self._validated:
            row.update(
                {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            )
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, history_csv(self.rows))
