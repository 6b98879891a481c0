"""Start-up timing: how long a run takes to reach its first training step (``metrics.json``;
``cmfnet bench`` reads it for its launch figures)."""

from __future__ import annotations

import time
from typing import Iterable, Optional

import lightning as L

from cmfnet import STARTED_AT

#: The keys of :meth:`StartupTimer.startup_times`, as metrics.json records them.
STARTUP_KEYS = ("launch_to_first_step_s", "job_start_to_first_step_s")


class StartupTimer(L.Callback):
    """Seconds from the process's import of cmfnet (its launch) and from the job's start to the
    first training step. The job starts when this callback is built: the training task builds
    its callbacks first (:func:`cmfnet.train.train`)."""

    def __init__(self) -> None:
        self.job_started_at = time.time()
        self.first_step_at: Optional[float] = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.time()

    def startup_times(self) -> dict[str, Optional[float]]:
        """``launch_to_first_step_s`` and ``job_start_to_first_step_s`` (None when no training
        step ran)."""
        if self.first_step_at is None:
            return dict.fromkeys(STARTUP_KEYS)
        return {
            "launch_to_first_step_s": self.first_step_at - STARTED_AT,
            "job_start_to_first_step_s": self.first_step_at - self.job_started_at,
        }


def startup_times(callbacks: Iterable[L.Callback]) -> dict[str, Optional[float]]:
    """The start-up times of the :class:`StartupTimer` among ``callbacks``; None values when
    the run has none (``~callbacks.startup_timer``)."""
    timer = next((c for c in callbacks if isinstance(c, StartupTimer)), None)
    return timer.startup_times() if timer is not None else dict.fromkeys(STARTUP_KEYS)
