"""Sweep results and resuming: each job's metrics.json into results.csv and results.md, and
``cmfnet resume`` for the jobs that did not complete.

When a multirun starts, :class:`ResultsTableCallback` writes the sweep's job list
(``.cmfnet_jobs.json``: each job's number, folder and overrides, worked out as Hydra's basic
sweeper does) and makes SIGINT and SIGTERM stop the whole sweep (:mod:`cmfnet.signals`); the
tables are written when the multirun ends, also when it was stopped. A job that was killed (no
metrics.json) is listed as failed, one stopped by a signal as interrupted, and one the sweep
never reached as not started. :func:`rerun_command` gives the line that re-runs one job alone
into its own folder, after which :func:`write_results` lists it as completed; ``cmfnet resume
SWEEP_DIR`` (:func:`resume_plan`, :func:`run_steps`) re-runs every job that did not complete.
A job stopped by a signal records where it can continue (:func:`interrupted_record`); submitit
requeues it, and the requeued job continues from there (:func:`resume_requeued_job`).
"""

from __future__ import annotations

import argparse
import atexit
import csv
import io
import json
import logging
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from cmfnet import signals
from cmfnet.io import write_json_atomic, write_text_atomic
from cmfnet.metrics import METRIC_KEYS, METRIC_LABELS, METRICS, OUTPUTS, SCORE_KEYS, std_key
from cmfnet.slurm import mark_held_jobs

log = logging.getLogger(__name__)

IDENTITY_COLUMNS = ["job", "status", "model", "data", "scale", "accel", "mask", "seed"]
OUTPUT_LABELS = {"sr": "SR", "rec": "rec"}
#: The sweep's job list, written when the multirun starts (see :func:`write_job_list`).
JOB_LIST = ".cmfnet_jobs.json"
NOT_STARTED = "not started"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def planned_jobs(config: DictConfig) -> list[dict]:
    """Every job of the multirun ``config`` as ``{"num", "dir", "overrides"}`` in launch order,
    worked out as Hydra's basic sweeper does (its ``params``, then the command line's
    overrides), each folder from ``hydra.sweep.subdir``. Another sweeper picks its jobs as it
    goes: ValueError."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != BASIC_SWEEPER:
        raise ValueError(f"hydra.sweeper {sweeper.get('_target_')} picks its jobs as it goes")
    loader = GlobalHydra.instance().config_loader()
    arguments = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    arguments += [str(o) for o in config.hydra.overrides.task]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(parsed, sweeper.get("max_batch_size"))
    jobs = []
    for num, overrides in enumerate(job for batch in batches for job in batch):
        job_config = loader.load_sweep_config(config, list(overrides))
        with open_dict(job_config):
            job_config.hydra.job.num = num
            job_config.hydra.job.id = num
        jobs.append(
            {"num": num, "dir": str(job_config.hydra.sweep.subdir), "overrides": list(overrides)}
        )
    return jobs


def write_job_list(sweep_dir: Path, config: DictConfig) -> None:
    """Write ``<sweep_dir>/.cmfnet_jobs.json``: the working folder and :func:`planned_jobs`."""
    write_json_atomic(
        Path(sweep_dir) / JOB_LIST, {"cwd": os.getcwd(), "jobs": planned_jobs(config)}
    )


def read_job_list(sweep_dir: Path) -> dict:
    """A sweep's job list as ``{"cwd": str or None, "jobs": [...]}``; empty when the sweep has
    none (another sweeper, or a sweep started before the list existed) or it is unreadable."""
    try:
        record = json.loads((Path(sweep_dir) / JOB_LIST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"cwd": None, "jobs": []}
    record = record if isinstance(record, dict) else {}
    jobs = [
        job
        for job in record.get("jobs") or []
        if isinstance(job, dict)
        and isinstance(job.get("dir"), str)
        and isinstance(job.get("overrides"), list)
    ]
    return {"cwd": record.get("cwd") if isinstance(record.get("cwd"), str) else None, "jobs": jobs}


def collect_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder of a sweep (a folder with a ``.hydra`` record or a metrics.json),
    plus one per job of the sweep's job list that has no folder.

    A job that left no metrics.json (killed) is listed with status ``failed``; a listed job
    without a folder with status ``not started``; a job that SLURM still holds with SLURM's
    state (``requeued``, ``pending``, ``running``) and its ``slurm_job_id``.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: sweep folder not found")
    rows = []
    for job_dir in sorted(
        p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):
        metrics_path = job_dir / "metrics.json"
        if not metrics_path.is_file() and not (job_dir / ".hydra").is_dir():
            continue
        if metrics_path.is_file():
            row = read_metrics(metrics_path)
        else:
            row = {"status": "failed", "error": "no metrics.json (killed or never finished)"}
        rows.append({**row, "job": job_dir.name})
    seen = {row["job"] for row in rows}
    listed = read_job_list(sweep_dir)["jobs"]
    for job in listed:
        if job["dir"] not in seen:
            seen.add(job["dir"])
            rows.append(
                {
                    "job": job["dir"],
                    "status": NOT_STARTED,
                    "error": "the sweep stopped before it started",
                }
            )
    mark_held_jobs(sweep_dir, rows, {str(job.get("num")): job["dir"] for job in listed})
    return rows


def read_metrics(path: Path) -> dict[str, Any]:
    """A job's metrics.json as a dict; an unreadable or malformed file gives a failed row
    instead."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return {"status": "failed", "error": f"unreadable metrics.json ({err})"}
    if not isinstance(metrics, dict):
        return {
            "status": "failed",
            "error": f"metrics.json holds a {type(metrics).__name__}, not an object",
        }
    return metrics


def _sort_key(row: dict) -> tuple:
    num, _, _ = row["job"].partition("_")
    return (int(num) if num.isdigit() else 1 << 30, row["job"])


def results_csv(rows: list[dict]) -> str:
    """CSV text: identity columns, metrics with their std over volumes, then the rest."""
    columns = IDENTITY_COLUMNS + list(METRIC_KEYS)
    extra = sorted({k for row in rows for k in row} - set(columns))
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=columns + extra, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in sorted(rows, key=_sort_key):
        writer.writerow(row)
    return buffer.getvalue()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(row: dict, metric: str) -> str:
    """``mean ± std`` of one metric; ``-`` when the value is missing or not a number."""
    value, std = row.get(metric), row.get(std_key(metric))
    if not _is_number(value):
        return "-"
    digits = 2 if metric.endswith("psnr") else 4
    return f"{value:.{digits}f} ± {std:.{digits}f}" if _is_number(std) else f"{value:.{digits}f}"


def results_markdown(rows: list[dict], title: str) -> str:
    """A Markdown table of every job; the jobs that did not complete show why."""
    header = ["job", "status", "model", "scale", "accel", "mask", "seed"] + [
        f"{OUTPUT_LABELS[output]} {METRIC_LABELS[metric]}"
        for output in OUTPUTS
        for metric in METRICS
    ]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in sorted(rows, key=_sort_key):
        cells = [
            str(row.get(k, ""))
            for k in ("job", "status", "model", "scale", "accel", "mask", "seed")
        ]
        cells += [_cell(row, key) for key in SCORE_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [row for row in rows if row.get("status") != "completed"]
    if failed:
        lines += ["", "## Jobs not completed", ""]
        lines += [f"- `{row['job']}`: {row.get('error', 'unknown error')}" for row in failed]
    lines.append("")
    lines.append(
        "Values are mean ± std over test volumes (fastMRI metrics on de-normalised outputs)."
    )
    return "\n".join(lines) + "\n"


def write_results(sweep_dir: Path) -> list[dict]:
    """Write results.csv and results.md at the sweep root (atomically) and return the rows.

    Idempotent: the same job folders give byte-identical files, however ``sweep_dir`` is spelled
    (the title names the sweep as ``<sweep name>/<timestamp>_<pid>``).
    """
    sweep_dir = Path(sweep_dir)
    rows = collect_results(sweep_dir)
    title = f"Results: {sweep_dir.resolve().parent.name}/{sweep_dir.resolve().name}"
    write_text_atomic(sweep_dir / "results.csv", results_csv(rows))
    write_text_atomic(sweep_dir / "results.md", results_markdown(rows, title=title))
    return rows


def _hydra_quoted(value: str) -> str:
    """A value in Hydra's override grammar as a quoted string (job folder names hold '='
    and ',')."""
    return "'" + value.replace("'", "\\'") + "'"


def rerun_overrides(
    job_dir: Path, recorded: Optional[Sequence[str]] = None, resume: bool = True
) -> list[str]:
    """Overrides for ``python run.py`` that re-run one job of a sweep alone, into its own folder.

    The job's recorded overrides (``.hydra/overrides.yaml``, including ``sweeps=NAME`` whose
    recipe settings still apply; ``recorded`` gives them for a job the sweep never started) plus
    ``hydra.mode=RUN`` (a named sweep would otherwise start the whole multirun again),
    ``hydra.run.dir=<job_dir>`` and, when ``resume`` and the job left
    ``checkpoints/last.ckpt``, ``ckpt_path=last`` to resume from it.
    """
    job_dir = Path(job_dir)
    if recorded is None:
        import yaml

        path = job_dir / ".hydra" / "overrides.yaml"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no record of the job's overrides (is {job_dir} a sweep job folder?)"
            )
        recorded = yaml.safe_load(path.read_text()) or []
    replaced = ("ckpt_path", "hydra.mode", "hydra.run.dir")
    overrides = [str(o) for o in recorded if str(o).split("=", 1)[0].lstrip("+~") not in replaced]
    overrides += ["hydra.mode=RUN", f"hydra.run.dir={_hydra_quoted(str(job_dir.resolve()))}"]
    if resume and (job_dir / "checkpoints" / "last.ckpt").is_file():
        overrides.append("ckpt_path=last")
    return overrides


def _shell_quoted(arg: str) -> str:
    """``arg`` for a POSIX shell; Hydra's quoted values go in double quotes, which read better."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def shell_line(args: Sequence[str]) -> str:
    """``args`` as one line for a POSIX shell."""
    return " ".join(_shell_quoted(arg) for arg in args)


def rerun_command(job_dir: Path, run_py: str = "run.py") -> str:
    """The shell line that re-runs a killed or failed job (see :func:`rerun_overrides`); run it
    from the repository root, then :func:`write_results` on the sweep folder."""
    return shell_line(["python", run_py, *rerun_overrides(job_dir)])


# --------------------------------------------------------------------------------------------
# Interrupted jobs
# --------------------------------------------------------------------------------------------


def interrupted_record(out: Path, stop: BaseException, overrides: Sequence[str]) -> dict:
    """metrics.json of the job in folder ``out`` that the signal of ``stop`` (or the last one
    received) interrupted: the checkpoint it can continue from and the job's ``overrides`` (a
    requeued job recognises its own record by them)."""
    import signal

    name = signals.signal_name(getattr(stop, "signum", None) or signals.received() or signal.SIGINT)
    last = out / "checkpoints" / "last.ckpt"
    checkpoint = str(last.relative_to(out)) if last.is_file() else None
    where = (
        f"last epoch-end checkpoint: {checkpoint}" if checkpoint else "before its first checkpoint"
    )
    return {
        "status": "interrupted",
        "error": f"stopped by {name} ({where})",
        "signal": name,
        "checkpoint": checkpoint,
        "overrides": list(overrides),
    }


def resume_requeued_job(cfg: DictConfig, out: Path, overrides: Sequence[str]) -> None:
    """Set ``ckpt_path=last`` for a submitit job requeued after a time-out, pre-emption or node
    failure, so that it continues from its own ``checkpoints/last.ckpt``: only inside a submitit
    job, with no ckpt_path given, when the metrics.json in ``out`` records this very job (the
    same ``overrides``) as interrupted, or, for a job SLURM restarted (``SLURM_RESTART_COUNT``
    above 0: requeued, also after a node failure that left no record), when there is no
    metrics.json. A fresh run never picks up a checkpoint on its own."""
    if cfg.get("ckpt_path") not in (None, "") or "SUBMITIT_FOLDER" not in os.environ:
        return
    last = out / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return
    try:
        record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        record = None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return
    restarted = os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0")
    if record is None and restarted:
        log.info("job restarted by SLURM without a record: continuing from %s", last)
    elif not (
        isinstance(record, dict)
        and record.get("status") == "interrupted"
        and record.get("overrides") == list(overrides)
    ):
        return
    else:
        log.info("requeued job: continuing from %s", last)
    cfg.ckpt_path = "last"


# --------------------------------------------------------------------------------------------
# cmfnet resume
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Hydra callback
# --------------------------------------------------------------------------------------------


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
