"""``cmfnet resume SWEEP_DIR``: re-run every job of a sweep that did not complete, each in its own
folder.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cmfnet.runs import signals
from cmfnet.sweeps.jobs import NOT_STARTED, read_job_list
from cmfnet.sweeps.rerun import rerun_overrides, shell_line
from cmfnet.sweeps.results import _sort_key, collect_results, write_results

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumeStep:
    """One job that ``cmfnet resume`` re-runs: its folder name and status, how it restarts, the
    overrides of ``python run.py``, and whether its stale records are set aside first."""

    job: str
    status: str
    how: str
    overrides: list[str]
    afresh: bool = False


def resume_plan(sweep_dir: Path, rerun_failed: bool = True) -> list[ResumeStep]:
    """The jobs of a sweep that did not complete, in job order. An interrupted job, or one
    killed before writing metrics.json, continues from its ``checkpoints/last.ckpt``; a job the
    sweep never started starts in the folder the sweep would have given it; a failed job starts
    afresh (left out when not ``rerun_failed``). Completed jobs, and jobs that SLURM still holds
    (see :func:`held_by_slurm`), are left out."""
    sweep_dir = Path(sweep_dir)
    listed = {job["dir"]: job["overrides"] for job in read_job_list(sweep_dir)["jobs"]}
    steps = []
    for row in sorted(collect_results(sweep_dir), key=_sort_key):
        job, status = row["job"], row.get("status")
        job_dir = sweep_dir / job
        if status == "completed" or row.get("slurm_job_id"):  # done, or SLURM's to finish
            continue
        if status == NOT_STARTED:
            overrides = rerun_overrides(job_dir, listed[job], resume=False)
            steps.append(ResumeStep(job, NOT_STARTED, "starts", overrides))
        elif status == "interrupted" or not (job_dir / "metrics.json").is_file():
            overrides = rerun_overrides(job_dir)
            how = (
                "continues from checkpoints/last.ckpt"
                if "ckpt_path=last" in overrides
                else "starts afresh"
            )
            killed = status != "interrupted"  # no metrics.json: killed before writing it
            steps.append(ResumeStep(job, "killed" if killed else "interrupted", how, overrides))
        elif rerun_failed:
            overrides = rerun_overrides(job_dir, resume=False)
            steps.append(ResumeStep(job, "failed", "starts afresh", overrides, afresh=True))
    return steps


def set_aside_stale_files(job_dir: Path) -> None:
    """Before a failed job starts afresh in its folder: remove the metrics.json and error.log
    that run left, and move its ``checkpoints/`` to ``checkpoints.stale/`` (``.stale2``, ...),
    kept: Lightning would save beside a stale last.ckpt, which ``ckpt_path=last`` then picks."""
    job_dir = Path(job_dir)
    for name in ("metrics.json", "error.log"):
        (job_dir / name).unlink(missing_ok=True)
    checkpoints = job_dir / "checkpoints"
    if checkpoints.is_dir():
        names = (f"checkpoints.stale{n if n > 1 else ''}" for n in range(1, 1 << 20))
        checkpoints.rename(next(job_dir / name for name in names if not (job_dir / name).exists()))


def run_py_path() -> Path:
    """The repository's ``run.py`` (beside the cmfnet package)."""
    import cmfnet

    return Path(cmfnet.__file__).resolve().parents[1] / "run.py"


def _end_job(proc: subprocess.Popen, signum: int, timeout_s: float) -> None:
    """Pass ``signum`` on to a job; kill it when it has not ended after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        name = signals.signal_name(signum)
        log.warning("job %d did not stop within %g s of %s; killing it", proc.pid, timeout_s, name)
        proc.kill()
        proc.wait()


def run_steps(
    sweep_dir: Path, steps: Sequence[ResumeStep], cwd: Path, stop_timeout_s: float = 60.0
) -> int:
    """Run each step's ``python run.py`` in turn in ``cwd`` (its output goes to this terminal),
    then rewrite the results tables. SIGINT or SIGTERM is passed on to the job in progress (it
    records itself as interrupted) and stops the resume with status 130 or 143, as a job that
    was stopped by one does. Returns 0 when every job of the sweep has now completed, else 1."""
    sweep_dir = Path(sweep_dir)
    status = 0
    try:
        with signals.stop_on_signals():
            for number, step in enumerate(steps, 1):
                print(f"[{number}/{len(steps)}] {step.job} ({step.status}) {step.how}", flush=True)
                if step.afresh:
                    set_aside_stale_files(sweep_dir / step.job)
                proc = subprocess.Popen(
                    [sys.executable, str(run_py_path()), *step.overrides], cwd=cwd
                )
                try:
                    code = proc.wait()
                except signals.Interrupted as stop:
                    _end_job(proc, stop.signum, stop_timeout_s)
                    raise
                if code in (128 + s for s in signals.STOP_SIGNALS):  # the job alone was stopped
                    status = code
                    break
    finally:
        rows = write_results(sweep_dir)
        left = [row["job"] for row in rows if row.get("status") != "completed"]
        print(
            f"{len(rows) - len(left)} of {len(rows)} jobs completed; "
            f"results: {sweep_dir / 'results.md'}",
            flush=True,
        )
    return status or (1 if left else 0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sweep_dir",
        type=Path,
        metavar="SWEEP_DIR",
        help="the sweep folder, multirun/<sweep>/<timestamp>_<pid>",
    )
    parser.add_argument(
        "--failed",
        choices=("rerun", "skip"),
        default="rerun",
        help="failed jobs: re-run them afresh, or leave them as they are (default: rerun)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the jobs to re-run and their commands, run nothing (default: off)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds the job in progress has, after SIGINT or SIGTERM is passed on to it, "
        "to record itself before it is killed (default: 60)",
    )


def held_by_slurm(rows: list[dict]) -> list[str]:
    """One line per job of ``rows`` that SLURM still holds, naming its SLURM job id and state."""
    return [
        f"{row['job']}: {row['error']}; left to SLURM (not started again)"
        for row in sorted(rows, key=_sort_key)
        if row.get("slurm_job_id")
    ]


def run(args: argparse.Namespace) -> int:
    """``cmfnet resume``: re-run, one after another, every job of a sweep that did not complete
    (see :func:`resume_plan`), each in its own folder, then rewrite the results tables. A job
    that SLURM still holds is never started a second time: it is named, and the resume ends
    with status 1 when nothing else is left to do."""
    sweep_dir = args.sweep_dir
    rows = collect_results(sweep_dir)
    if not rows:
        raise ValueError(
            f"{sweep_dir}: no job folders (expected a multirun/<sweep>/<timestamp> folder)"
        )
    held = held_by_slurm(rows)
    for line in held:
        print(line)
    steps = resume_plan(sweep_dir, rerun_failed=args.failed == "rerun")
    recorded = read_job_list(sweep_dir)["cwd"]
    cwd = Path(recorded) if recorded and Path(recorded).is_dir() else Path.cwd()
    if not steps:
        write_results(sweep_dir)
        if held:
            print(
                f"{len(held)} job(s) of {sweep_dir} still held by SLURM; run cmfnet resume "
                f"or cmfnet report {sweep_dir} again when they end to rebuild results.md"
            )
            return 1
        print(f"every job of {sweep_dir} completed; nothing to resume")
        return 0
    if args.dry_run:
        print(f"cd {shlex.quote(str(cwd))}")
        for step in steps:
            print(f"# {step.job} ({step.status}) {step.how}")
            print(shell_line(["python", str(run_py_path()), *step.overrides]))
        return 0
    return run_steps(sweep_dir, steps, cwd, stop_timeout_s=args.stop_timeout)
