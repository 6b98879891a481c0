"""Sweep results: collect each job's metrics.json into results.csv and results.md.

Used by the Hydra callback that runs when a multirun ends and by ``cmfnet report``. A job that
was killed (no metrics.json) is listed as failed; :func:`rerun_command` gives the line that
re-runs it alone into its own folder, after which :func:`write_results` lists it as completed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shlex
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cmfnet.io import write_text_atomic

log = logging.getLogger(__name__)

IDENTITY_COLUMNS = ["job", "status", "model", "data", "scale", "accel", "mask", "seed"]
METRIC_COLUMNS = [f"{out}_{m}" for out in ("sr", "rec") for m in ("psnr", "ssim", "nmse")]


def collect_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder of a sweep (a folder with a ``.hydra`` record or a metrics.json).

    A job that left no metrics.json (killed, or never started) is listed with status ``failed``.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: sweep folder not found")
    rows = []
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        metrics_path = job_dir / "metrics.json"
        if not metrics_path.is_file() and not (job_dir / ".hydra").is_dir():
            continue
        if metrics_path.is_file():
            row = read_metrics(metrics_path)
        else:
            row = {"status": "failed", "error": "no metrics.json (killed or never finished)"}
        rows.append({**row, "job": job_dir.name})
    return rows


def read_metrics(path: Path) -> dict[str, Any]:
    """A job's metrics.json as a dict; an unreadable or malformed file gives a failed row instead."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return {"status": "failed", "error": f"unreadable metrics.json ({err})"}
    if not isinstance(metrics, dict):
        return {"status": "failed", "error": f"metrics.json holds a {type(metrics).__name__}, not an object"}
    return metrics


def _sort_key(row: dict) -> tuple:
    num, _, _ = row["job"].partition("_")
    return (int(num) if num.isdigit() else 1 << 30, row["job"])


def results_csv(rows: list[dict]) -> str:
    """CSV text: identity columns, metrics with their std over volumes, then the rest."""
    columns = IDENTITY_COLUMNS + [c for m in METRIC_COLUMNS for c in (m, f"{m}_std")]
    extra = sorted({k for row in rows for k in row} - set(columns))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns + extra, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=_sort_key):
        writer.writerow(row)
    return buffer.getvalue()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(row: dict, metric: str) -> str:
    """``mean ± std`` of one metric; ``-`` when the value is missing or not a number."""
    value, std = row.get(metric), row.get(f"{metric}_std")
    if not _is_number(value):
        return "-"
    digits = 2 if metric.endswith("psnr") else 4
    return f"{value:.{digits}f} ± {std:.{digits}f}" if _is_number(std) else f"{value:.{digits}f}"


def results_markdown(rows: list[dict], title: str) -> str:
    """A Markdown table of every job; failed jobs show their error."""
    header = ["job", "status", "model", "scale", "accel", "mask", "seed"] + [
        "SR PSNR", "SR SSIM", "SR NMSE", "rec PSNR", "rec SSIM", "rec NMSE"
    ]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in sorted(rows, key=_sort_key):
        cells = [str(row.get(k, "")) for k in ("job", "status", "model", "scale", "accel", "mask", "seed")]
        cells += [_cell(row, m) for m in METRIC_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [row for row in rows if row.get("status") != "completed"]
    if failed:
        lines += ["", "## Failed jobs", ""] + [f"- `{row['job']}`: {row.get('error', 'unknown error')}" for row in failed]
    lines.append("")
    lines.append("Values are mean ± std over test volumes (fastMRI metrics on de-normalised outputs).")
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
    """A value in Hydra's override grammar as a quoted string (job folder names hold '=' and ',')."""
    return "'" + value.replace("'", "\\'") + "'"


def rerun_overrides(job_dir: Path) -> list[str]:
    """Overrides for ``python run.py`` that re-run one job of a sweep alone, into its own folder.

    The job's recorded overrides (``.hydra/overrides.yaml``, including ``sweeps=NAME`` whose
    recipe settings still apply) plus ``hydra.mode=RUN`` (a named sweep would otherwise start
    the whole multirun again), ``hydra.run.dir=<job_dir>`` and, when the job left
    ``checkpoints/last.ckpt``, ``ckpt_path=last`` to resume from it.
    """
    import yaml

    job_dir = Path(job_dir)
    recorded = job_dir / ".hydra" / "overrides.yaml"
    if not recorded.is_file():
        raise FileNotFoundError(f"{recorded}: no record of the job's overrides (is {job_dir} a sweep job folder?)")
    replaced = ("ckpt_path", "hydra.mode", "hydra.run.dir")
    overrides = [
        str(o) for o in (yaml.safe_load(recorded.read_text()) or [])
        if str(o).split("=", 1)[0].lstrip("+~") not in replaced
    ]
    overrides += ["hydra.mode=RUN", f"hydra.run.dir={_hydra_quoted(str(job_dir.resolve()))}"]
    if (job_dir / "checkpoints" / "last.ckpt").is_file():
        overrides.append("ckpt_path=last")
    return overrides


def _shell_quoted(arg: str) -> str:
    """``arg`` for a POSIX shell; Hydra's quoted values go in double quotes, which read better."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def rerun_command(job_dir: Path, run_py: str = "run.py") -> str:
    """The shell line that re-runs a killed or failed job (see :func:`rerun_overrides`); run it
    from the repository root, then :func:`write_results` on the sweep folder."""
    return " ".join(_shell_quoted(arg) for arg in ["python", run_py, *rerun_overrides(job_dir)])


class ResultsTableCallback(Callback):
    """Hydra callback: when a multirun ends, write its results tables and report failures."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = write_results(sweep_dir)
        failed = [row["job"] for row in rows if row.get("status") != "completed"]
        log.info("sweep results: %s", sweep_dir / "results.md")
        if failed:
            log.error("%d of %d jobs failed: %s (see %s)", len(failed), len(rows), ", ".join(failed), sweep_dir / "results.md")
