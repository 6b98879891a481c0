"""What a run shows while it trains: a progress bar with the run's ETA, a projection of the run's
(and the sweep's) length after its first steps, and plain lines when output is not a terminal.

:func:`progress_bar` picks Lightning's rich bar on a terminal and :class:`PlainProgressLines`
otherwise (a file, a pipe, a SLURM log), where a live bar would print nothing for hours.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

log = logging.getLogger(__name__)


def format_duration(seconds: Optional[float]) -> str:
    """``1:02:03`` (h:mm:ss), ``2 d 03:04`` beyond a day, ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days} d {hours:02d}:{minutes:02d}" if days else f"{hours}:{minutes:02d}:{secs:02d}"


@dataclass
class RunClock:
    """Projects a run's remaining time from its measured step and validation times.

    The first ``warmup_steps`` training steps (start-up, autotuning, allocation) are not timed.
    Validation passes are timed as they happen; until the first one ends, a projection covers
    training only. The test pass is counted as one more validation pass.
    """

    total_steps: int
    total_validations: int
    warmup_steps: int = 1
    steps: int = 0
    samples: int = 0
    timed_from: Optional[float] = None
    timed_steps: int = 0
    timed_samples: int = 0
    timed_s: float = 0.0
    validation_s: list[float] = field(default_factory=list)

    def step(self, now: float, samples: int) -> None:
        """Record one finished training step of ``samples`` samples at time ``now``."""
        self.steps += 1
        self.samples += samples
        if self.steps == self.warmup_steps:
            self.timed_from = now
        elif self.steps > self.warmup_steps and self.timed_from is not None:
            self.timed_steps += 1
            self.timed_samples += samples
            self.timed_s = now - self.timed_from

    @property
    def seconds_per_step(self) -> Optional[float]:
        return self.timed_s / self.timed_steps if self.timed_steps else None

    @property
    def samples_per_s(self) -> Optional[float]:
        return self.timed_samples / self.timed_s if self.timed_steps and self.timed_s > 0 else None

    def remaining_s(self, steps_done: int, validations_done: int) -> Optional[float]:
        """Seconds left: the remaining steps at the measured rate, plus the remaining validation
        passes (and the test pass) at their measured mean once one has been timed."""
        if self.seconds_per_step is None:
            return None
        left = max(0, self.total_steps - steps_done) * self.seconds_per_step
        if self.validation_s:
            mean = sum(self.validation_s) / len(self.validation_s)
            left += (max(0, self.total_validations - validations_done) + 1) * mean
        return left


def batch_size_of(batch: Any) -> int:
    """Samples in a batch: the leading size of its first tensor field (1 if none is found)."""
    fields = (
        batch._asdict().values()
        if hasattr(batch, "_asdict")
        else (batch if isinstance(batch, (list, tuple)) else [batch])
    )
    for value in fields:
        shape = getattr(value, "shape", None)
        if shape:
            return int(shape[0])
    return 1


def sweep_position() -> Optional[tuple[int, int]]:
    """(this job's index, number of jobs) inside a Hydra multirun whose job list is known
    (:data:`cmfnet.sweeps.jobs.JOB_LIST`), else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    from cmfnet.sweeps.jobs import read_job_list

    config = HydraConfig.get()
    jobs = read_job_list(Path(config.sweep.dir))["jobs"]
    return (int(config.job.num), len(jobs)) if jobs else None


def has_gpu(trainer: L.Trainer) -> bool:
    return trainer.strategy.root_device.type == "cuda"


class RunTimeEstimate(L.Callback):
    """Say, after the first steps and again after the first validation, how long the run (and
    the sweep it belongs to) is projected to take; on a machine without a GPU, name the quick
    alternative when that is long.

    Args:
        after_steps: training steps (after the first, untimed one) before the first projection.
        long_run_minutes: on a CPU, a projection beyond this many minutes names ``quick_hint``.
        quick_hint: the quick alternative, shown with long CPU projections.
        sweep_jobs: ``() -> (this job's index, number of jobs)`` inside a multirun, else None
            (default: :func:`sweep_position`).
    """

    def __init__(
        self,
        after_steps: int = 5,
        long_run_minutes: float = 30.0,
        quick_hint: str = (
            "experiment=quickstart (a first result) or experiment=smoke (the plumbing)"
        ),
        sweep_jobs: Optional[Callable[[], Optional[tuple[int, int]]]] = None,
    ):
        self.after_steps = after_steps
        self.long_run_minutes = long_run_minutes
        self.quick_hint = quick_hint
        self.sweep_jobs = sweep_jobs or sweep_position
        self.clock: Optional[RunClock] = None
        self.validations_done = 0
        self.validation_started: Optional[float] = None
        self.projected_after_validation = False
        self.lines: list[str] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        total = int(total) if math.isfinite(total) else trainer.global_step
        validations = (
            trainer.max_epochs - trainer.current_epoch
            if trainer.max_epochs and trainer.max_epochs > 0
            else 0
        )
        has_val = bool(trainer.num_val_batches) and any(n > 0 for n in trainer.num_val_batches)
        self.clock = RunClock(total_steps=total, total_validations=validations if has_val else 0)
        self.train_started = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.clock is None:
            return
        self.clock.step(time.perf_counter(), batch_size_of(batch))
        if (
            self.clock.steps == self.clock.warmup_steps + self.after_steps
            and not self.projected_after_validation
        ):
            self.report(trainer, "after its first steps")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.clock is not None:
            self.validation_started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.validation_started is None or self.clock is None:
            return
        self.clock.validation_s.append(time.perf_counter() - self.validation_started)
        self.validation_started = None
        self.validations_done += 1
        if not self.projected_after_validation:
            self.projected_after_validation = True
            self.report(trainer, "after its first validation")

    def eta_s(self, trainer: L.Trainer) -> Optional[float]:
        """Seconds the run is projected to go on for (None until it can be projected)."""
        if self.clock is None:
            return None
        return self.clock.remaining_s(trainer.global_step, self.validations_done)

    def report(self, trainer: L.Trainer, when: str) -> None:
        """Log one line: the run's projected remaining time (and the sweep's), with a hint on a
        CPU when it is long."""
        remaining = self.eta_s(trainer)
        if remaining is None or not trainer.is_global_zero:
            return
        what = "" if self.clock.validation_s else " (training only: validation not timed yet)"
        line = (
            f"projected time of this run {when}: {format_duration(remaining)} more{what}, "
            f"at {self.clock.samples_per_s or 0:.1f} samples/s"
        )
        jobs = self.sweep_jobs()
        if jobs is not None:
            index, count = jobs
            job_total = time.perf_counter() - self.train_started + remaining
            remaining += max(0, count - index - 1) * job_total
            line += (
                f"; the sweep: about {format_duration(remaining)} more if its other jobs are alike "
                f"(job {index + 1} of {count})"
            )
        if not has_gpu(trainer) and remaining > 60 * self.long_run_minutes:
            line += f". No GPU here: for a quick look use {self.quick_hint}"
        self.lines.append(line)
        log.info(line)


def _estimate(trainer: L.Trainer) -> Optional[RunTimeEstimate]:
    return next((c for c in trainer.callbacks if isinstance(c, RunTimeEstimate)), None)


class CheckedLossProgressBar(RichProgressBar):
    """Lightning's rich progress bar, showing the training loss that the module's NaN/inf check
    has already read from the device (``pl_module.last_train_loss``) and the run's ETA (from
    :class:`RunTimeEstimate`, when configured).

    Lightning's own bar reads a ``prog_bar=True`` loss tensor after every step; on a GPU that
    read waits for the optimizer step to finish, and the device then idles while the host fetches
    the next batch. Takes :class:`~lightning.pytorch.callbacks.RichProgressBar`'s arguments.
    """

    def get_metrics(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> dict[str, Union[int, str, float, dict[str, float]]]:
        metrics = super().get_metrics(trainer, pl_module)
        loss = getattr(pl_module, "last_train_loss", None)
        if loss is not None:
            metrics["train/loss"] = loss
        estimate = _estimate(trainer)
        if estimate is not None and trainer.training:
            metrics["run ETA"] = format_duration(estimate.eta_s(trainer))
        return metrics


class PlainProgressLines(ProgressBar):
    """Progress as plain log lines, for output that is not a terminal: every ``interval_s``
    seconds of training and at the end of each epoch, one line with the epoch, step, training
    loss, samples/s and the run's ETA (from :class:`RunTimeEstimate`, when configured)."""

    def __init__(self, interval_s: float = 30.0):
        super().__init__()
        self.interval_s = interval_s
        self.enabled = True
        self.last_line_at = 0.0
        self.window_from: Optional[float] = None
        self.window_samples = 0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.window_from, self.window_samples = time.perf_counter(), 0
        self.last_line_at = self.last_line_at or time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.window_samples += batch_size_of(batch)
        if self.enabled and time.perf_counter() - self.last_line_at >= self.interval_s:
            self.write_line(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled:
            self.write_line(trainer, pl_module, "epoch done")

    def write_line(self, trainer: L.Trainer, pl_module: L.LightningModule, note: str = "") -> str:
        now = time.perf_counter()
        elapsed = now - (self.window_from or now)
        estimate = _estimate(trainer)
        measured = (
            estimate.clock.samples_per_s
            if estimate is not None and estimate.clock is not None
            else None
        )
        rate = (
            self.window_samples / elapsed
            if self.window_samples and elapsed > 0
            else (measured or 0.0)
        )
        loss = getattr(pl_module, "last_train_loss", None)
        eta = format_duration(estimate.eta_s(trainer)) if estimate is not None else "?"
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        steps = trainer.estimated_stepping_batches
        line = (
            f"epoch {trainer.current_epoch + 1}/{epochs} step {trainer.global_step}/"
            f"{int(steps) if math.isfinite(steps) else '?'} "
            f"loss {'?' if loss is None else f'{loss:.4g}'} "
            f"{rate:.1f} samples/s ETA {eta}" + (f" ({note})" if note else "")
        )
        if trainer.is_global_zero:
            log.info(line)
        self.last_line_at = now
        self.window_from, self.window_samples = now, 0
        return line


def output_is_terminal() -> bool:
    """Whether stdout is an interactive terminal (not a file, a pipe or a dumb terminal)."""
    return sys.stdout.isatty() and os.environ.get("TERM", "") != "dumb"


def progress_bar(plain_interval_s: float = 30.0, terminal: Optional[bool] = None) -> ProgressBar:
    """The run's progress display: the rich bar on a terminal, plain lines every
    ``plain_interval_s`` seconds otherwise (``terminal`` overrides the detection)."""
    if output_is_terminal() if terminal is None else terminal:
        return CheckedLossProgressBar()
    return PlainProgressLines(interval_s=plain_interval_s)
