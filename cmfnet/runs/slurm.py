"""SLURM: which of a sweep's jobs SLURM still holds, and the Lightning environment of a job.

``launcher=slurm`` (``hydra_plugins/cmfnet_launchers/slurm_launcher.py``) records each job's
SLURM id in ``<sweep>/.cmfnet_slurm_jobs.json`` as it submits it. :func:`held_jobs` asks
``squeue`` (never ``sacct``: clusters without accounting answer it with an error) which of them
SLURM still holds: pending, running, or requeued after a pre-emption, a time limit or a node
failure. The results tables show such a job with its SLURM state and id
(:func:`mark_held_jobs`), and ``cmfnet resume`` leaves it to SLURM.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

from cmfnet.runs.io import write_json_atomic

log = logging.getLogger(__name__)

#: A sweep's record of its jobs' SLURM ids: {job number: SLURM job id}.
SLURM_JOBS = ".cmfnet_slurm_jobs.json"


class Held(NamedTuple):
    """A job SLURM still holds: its id, state (``PENDING``, ``RUNNING``, ...) and reason."""

    job_id: str
    state: str
    reason: str

    def describe(self) -> str:
        reason = f", {self.reason}" if self.reason and self.reason != "None" else ""
        return f"SLURM job {self.job_id}: {self.state}{reason}"


def record_job_ids(sweep_dir: Path, ids: dict[int, str]) -> None:
    """Add ``{job number: SLURM id}`` to the sweep's record."""
    path = Path(sweep_dir) / SLURM_JOBS
    write_json_atomic(path, {**read_job_ids(sweep_dir), **{str(k): v for k, v in ids.items()}})


def read_job_ids(sweep_dir: Path) -> dict[str, str]:
    """The sweep's ``{job number: SLURM id}``; empty when it was not submitted to SLURM."""
    try:
        record = json.loads((Path(sweep_dir) / SLURM_JOBS).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return {str(k): str(v) for k, v in record.items()} if isinstance(record, dict) else {}


def held_jobs(job_ids: Iterable[str]) -> Optional[dict[str, Held]]:
    """Which of ``job_ids`` SLURM still holds (one ``squeue`` call for this user's jobs, one
    line per array element); None when squeue is missing or fails."""
    wanted = set(job_ids)
    if not wanted:
        return {}
    if shutil.which("squeue") is None:
        return None
    command = ["squeue", "--me", "--array", "--noheader", "--format=%i|%T|%r"]
    try:
        lines = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=60
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("squeue failed: %s", err)
        return None
    held = {}
    for line in lines:
        job_id, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if job_id in wanted:
            held[job_id] = Held(job_id, state, reason)
    return held


def mark_held_jobs(sweep_dir: Path, rows: list[dict], job_dirs: dict[str, str]) -> None:
    """Rows of jobs that SLURM still holds and that have not completed get SLURM's truth: status
    ``requeued`` (pending again after it ran), ``pending`` or ``running`` (SLURM's state in
    lower case), ``slurm_job_id``, and the state and reason as the error. ``job_dirs`` maps job
    numbers to job folder names (the sweep's job list)."""
    ids = read_job_ids(sweep_dir)
    if not ids:
        return
    by_dir = {job_dirs[num]: job_id for num, job_id in ids.items() if num in job_dirs}
    waiting = [row for row in rows if row.get("status") != "completed" and row["job"] in by_dir]
    held = held_jobs(by_dir[row["job"]] for row in waiting) if waiting else {}
    for row in waiting:
        found = (held or {}).get(by_dir[row["job"]])
        if found is None:
            continue
        ran = (Path(sweep_dir) / row["job"] / ".hydra").is_dir()
        requeued = ran and found.state in ("PENDING", "REQUEUED", "REQUEUE_HOLD")
        row.update(
            status="requeued" if requeued else found.state.lower(),
            slurm_job_id=found.job_id,
            error=f"{found.describe()} (SLURM still holds it)",
        )


def lightning_environment(auto_requeue: bool):
    """The trainer's cluster environment (``trainer.plugins`` of ``launcher=slurm``): Lightning's
    SLURM environment with its own requeueing set by ``auto_requeue`` inside a SLURM job step,
    Lightning's default elsewhere (a SLURM sweep's job re-run by ``cmfnet resume`` on a
    workstation)."""
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    if "SLURM_JOB_ID" in os.environ and "SLURM_STEP_ID" in os.environ:
        return SLURMEnvironment(auto_requeue=auto_requeue)
    return LightningEnvironment()
