"""Run and sweep folders are cmfnet's own: a Hydra callback claims them before Hydra writes.

``hydra.run.dir`` and ``hydra.sweep.dir`` may name any folder. Before Hydra writes its
``.hydra`` record there, the folder must be new, empty, or one that cmfnet made (a run folder
to resume, a sweep folder); a folder holding a user's files is refused with one line, and
nothing is written into it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cmfnet.runs.ownership import (
    ForeignPathError,
    claim_folder,
    mark,
    mark_earlier_folder,
    owner_kind,
)


def looks_like_unmarked_run(folder: Path) -> bool:
    """A run folder written before cmfnet marked its folders: Hydra's record of the job's
    overrides beside the resolved ``config.yaml`` that every cmfnet run saves."""
    return (folder / ".hydra" / "overrides.yaml").is_file() and (folder / "config.yaml").is_file()


def claim_run_folder(folder: Path, setting: str) -> Path:
    """``folder`` claimed for one run (new, empty, or a cmfnet run folder to resume)."""
    mark_earlier_folder(folder, "run", looks_like_unmarked_run)
    return claim_folder(folder, "run", setting=setting)


class OutputFolderCallback(Callback):
    """Claim ``hydra.run.dir`` (one run) or ``hydra.sweep.dir`` (a multirun) before Hydra writes
    into it, and mark each job's folder as a cmfnet run folder when the job starts."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        guarded(claim_run_folder, Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        guarded(claim_folder, Path(config.hydra.sweep.dir), "sweep", setting="hydra.sweep.dir")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.runtime.output_dir)
        if owner_kind(folder) is None:
            mark(folder, "run")


def guarded(claim, *args: Any, **kwargs: Any) -> None:
    """Run ``claim``; a refused folder ends the program with its one-line error and status 1
    (an exception raised in a Hydra callback would print a traceback)."""
    try:
        claim(*args, **kwargs)
    except ForeignPathError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
