"""Sweep results: collect each job's metrics.json into results.csv and results.md.

Used by the Hydra callback that runs when a multirun ends and by ``cmfnet report``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
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
        row: dict[str, Any] = {"job": job_dir.name}
        if metrics_path.is_file():
            try:
                row.update(json.loads(metrics_path.read_text()))
            except json.JSONDecodeError as err:
                row.update(status="failed", error=f"unreadable metrics.json ({err})")
        else:
            row.update(status="failed", error="no metrics.json (killed or never finished)")
        rows.append(row)
    return rows


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


def _cell(row: dict, metric: str) -> str:
    value, std = row.get(metric), row.get(f"{metric}_std")
    if value is None:
        return "-"
    digits = 2 if metric.endswith("psnr") else 4
    return f"{value:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{value:.{digits}f}"


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
    """Write results.csv and results.md at the sweep root (atomically) and return the rows."""
    sweep_dir = Path(sweep_dir)
    rows = collect_results(sweep_dir)
    write_text_atomic(sweep_dir / "results.csv", results_csv(rows))
    write_text_atomic(sweep_dir / "results.md", results_markdown(rows, title=f"Results: {sweep_dir}"))
    return rows


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
