"""A sweep's results tables: each job's metrics.json (or its absence: failed, interrupted, not
started) into ``results.csv`` and ``results.md``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from cmfnet.mri.metrics import (
    METRIC_KEYS,
    METRIC_LABELS,
    METRICS,
    OUTPUTS,
    SCORE_KEYS,
    metric_digits,
    std_key,
)
from cmfnet.runs.io import write_text_atomic
from cmfnet.runs.settings import RUN_IDENTITY
from cmfnet.runs.slurm import mark_held_jobs
from cmfnet.sweeps.jobs import NOT_STARTED, read_job_list

#: the columns before the metrics in results.csv and results.md
IDENTITY_COLUMNS = ["job", "status", *RUN_IDENTITY]


OUTPUT_LABELS = {"sr": "SR", "rec": "rec"}


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
    digits = metric_digits(metric)
    return f"{value:.{digits}f} ± {std:.{digits}f}" if _is_number(std) else f"{value:.{digits}f}"


def results_markdown(rows: list[dict], title: str) -> str:
    """A Markdown table of every job; the jobs that did not complete show why."""
    header = IDENTITY_COLUMNS + [
        f"{OUTPUT_LABELS[output]} {METRIC_LABELS[metric]}"
        for output in OUTPUTS
        for metric in METRICS
    ]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in sorted(rows, key=_sort_key):
        cells = [str(row.get(k, "")) for k in IDENTITY_COLUMNS]
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
