"""The Hydra callback of a multirun: writes the job list when it starts, makes SIGINT and SIGTERM
stop the whole sweep, and writes the results tables when it ends (also when stopped).
"""

from __future__ import annotations

import atexit
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cmfnet.runs import signals
from cmfnet.sweeps.jobs import write_job_list
from cmfnet.sweeps.results import write_results
from cmfnet.sweeps.resume import held_by_slurm

log = logging.getLogger(__name__)


class ResultsTableCallback(Callback):
    """Hydra callback: when a multirun starts, write its job list and make SIGINT and SIGTERM
    stop it; when it ends, also when stopped, write its results tables and report failures."""

    def __init__(self) -> None:
        self.ended = False
        self.replaced: dict = {}  # the signal handlers replaced while the multirun runs
        self.continue_with = ""  # how a stopped multirun continues

    def __getstate__(self) -> dict:  # pickled into a launcher's workers: the handlers stay here
        return {**self.__dict__, "replaced": {}}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.replaced = signals.install()
        sweep_dir = Path(config.hydra.sweep.dir)
        # A sweeper that keeps a study (hparams_search) continues it itself.
        self.continue_with = (
            "the same command"
            if config.hydra.sweeper.get("storage")
            else f"cmfnet resume {sweep_dir}"
        )
        atexit.register(self.write_if_stopped, sweep_dir)  # on_multirun_end does not run then
        try:
            write_job_list(sweep_dir, config)
        except (
            Exception
        ) as err:  # the sweep runs anyway; tables then list only the jobs that started
            log.warning(
                "no job list for %s (%s): jobs never started will not be listed", sweep_dir, err
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.ended = True
        signals.restore(self.replaced)
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = write_results(sweep_dir)
        failed = [row["job"] for row in rows if row.get("status") != "completed"]
        log.info("sweep results: %s", sweep_dir / "results.md")
        for line in held_by_slurm(rows):
            log.warning("%s", line)
        if failed:
            log.error(
                "%d of %d jobs did not complete: %s (see %s)",
                len(failed),
                len(rows),
                ", ".join(failed),
                sweep_dir / "results.md",
            )

    def write_if_stopped(self, sweep_dir: Path) -> None:
        """At exit of a multirun that did not end (a stop signal, an error): write the tables."""
        if self.ended or not sweep_dir.is_dir():
            return
        rows = write_results(sweep_dir)
        done = sum(row.get("status") == "completed" for row in rows)
        log.warning(
            "sweep stopped: %d of %d jobs completed (see %s); continue it with: %s",
            done,
            len(rows),
            sweep_dir / "results.md",
            self.continue_with,
        )
        for line in held_by_slurm(rows):
            log.warning("%s", line)
