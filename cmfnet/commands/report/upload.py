"""Uploading a report's tables and figures to W&B, in the sweep's group."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from cmfnet.commands.report.paired import PAIRED_COLUMNS, Pairing, paired_long_rows
from cmfnet.commands.report.records import Report
from cmfnet.commands.report.tables import CSV_COLUMNS, long_rows, table_rows
from cmfnet.mri.metrics import (
    OUTPUTS,
)


@contextmanager
def scoped_environ(defaults: dict[str, str]) -> Iterator[None]:
    """Set environment variables that are not set yet, and remove them again afterwards."""
    added = [k for k in defaults if k not in os.environ]
    os.environ.update({k: defaults[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def log_to_wandb(
    report: Report, stats: dict, pairing: Pairing, out: Path, figures: list[str], project: str
) -> Path:
    """Log the tables (as shown), the tidy tables and the figures into a new W&B run
    (``WANDB_MODE``, default offline; files under ``out/wandb``) and finish it; returns the
    run's folder (``out/wandb/offline-run-*`` when offline)."""
    import wandb

    defaults = {
        "WANDB_SILENT": "true",
        "WANDB_CACHE_DIR": str(out / "wandb" / "cache"),
        "WANDB_CONFIG_DIR": str(out / "wandb" / "config"),
        "WANDB_DATA_DIR": str(out / "wandb" / "data"),
    }
    with scoped_environ(defaults):
        run = wandb.init(
            project=project,
            dir=str(out),
            mode=os.environ.get("WANDB_MODE", "offline"),
            job_type="report",
            group=report.group(),
            name=f"report {report.group()}",
            config={
                "sweep_dirs": [str(d) for d in report.sweep_dirs],
                "runs": len(report.runs),
                "failed_jobs": len(report.failures),
            },
        )
        payload: dict[str, Any] = {}
        for output in OUTPUTS:
            for i, regime in enumerate(report.regimes):
                header, rows = table_rows(report, stats, output, False, regime)
                suffix = f"_{i + 1}" if len(report.regimes) > 1 else ""  # in regimes' order
                payload[f"report/{output}_table{suffix}"] = wandb.Table(columns=header, data=rows)
        tidy = long_rows(report, stats)
        payload["report/long"] = wandb.Table(
            columns=list(CSV_COLUMNS), data=[[row[c] for c in CSV_COLUMNS] for row in tidy]
        )
        payload["report/paired"] = wandb.Table(
            columns=list(PAIRED_COLUMNS),
            data=[
                [row.get(c) for c in PAIRED_COLUMNS] for row in paired_long_rows(report, pairing)
            ],
        )
        for name in figures:
            payload[f"report/{Path(name).stem}"] = wandb.Image(str(out / name))
        run.log(payload)
        run_dir = Path(run.dir).parent
        run.finish()
        # finish() may return before the run's .wandb log is on disk; this waits for it
        wandb.teardown()
    return run_dir
