"""The report's tables: formatted cells, rows per method, and the tidy long CSV."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

from cmfnet.commands.report.records import (
    HIGHER_IS_BETTER,
    SETTING_COLUMNS,
    CellStats,
    Report,
    setting_fields,
)
from cmfnet.commands.report.stats import best_methods
from cmfnet.mri.metrics import (
    METRIC_LABELS,
    METRICS,
    OUTPUTS,
    metric_digits,
)

CSV_COLUMNS = ("method", "model", *SETTING_COLUMNS, "mean", "std", "n_seeds", "seed_sd")


NUMBERS_LINE = (
    "Each cell: mean ± std over test volumes of fastMRI's per-volume PSNR (dB), SSIM and NMSE, "
    "computed on de-normalised outputs against their targets (data range = volume max), as the "
    "scoring below says. "
    "With several seeds: mean over seeds of each run's mean ± mean over seeds of each run's std "
    "over volumes, then (seeds: n, sd s) with s the sample sd over seeds of the per-run means. "
    "**Bold**: best per column (max PSNR/SSIM, min NMSE) at the shown precision."
)


def format_cell(value: CellStats, metric: str, bold: bool = False) -> str:
    """``31.25 ± 0.84``, the mean in bold if asked, then ``(seeds: n, sd s)`` for several seeds."""
    digits = metric_digits(metric)
    mean = f"{value.mean:.{digits}f}"
    text = f"**{mean}**" if bold else mean
    if math.isfinite(value.std) and math.isfinite(value.mean):  # a NaN mean has no spread to show
        text += f" ± {value.std:.{digits}f}"
    if value.seed_sd is not None:
        text += f" (seeds: {value.n_seeds}, sd {value.seed_sd:.{digits}f})"
    return text


def table_rows(
    report: Report, stats: dict, output: str, bold: bool, regime: tuple[str, ...]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one output's table of one regime: a method column, its parameter
    count, then one column per (setting, metric); empty cells read ``failed`` (a job failed) or
    ``-`` (never run)."""
    columns = report.columns_of(regime)
    methods = report.methods_in(columns)
    header = ["method", "params"] + [
        f"{report.column_label(c, in_table=True)} {METRIC_LABELS[m]} "
        f"{'↑' if HIGHER_IS_BETTER[m] else '↓'}"
        for c in columns
        for m in METRICS
    ]
    best = {(c, m): best_methods(stats, methods, c, output, m) for c in columns for m in METRICS}
    rows = []
    for method in methods:
        row = [method, params_label(report, method)]
        for column in columns:
            for metric in METRICS:
                value = stats.get((method, column, output, metric))
                if value is None:
                    row.append("failed" if report.failed_in(method, column) else "-")
                else:
                    row.append(
                        format_cell(value, metric, bold and method in best[(column, metric)])
                    )
        rows.append(row)
    return header, rows


def params_label(report: Report, method: str) -> str:
    """The method's trained parameters as its runs' metrics.json record them, in millions (a
    range where they differ, e.g. by scale); ``-`` when none records them."""
    recorded = (r.metrics.get("params") for r in report.runs if r.method == method)
    counts = sorted({count for count in recorded if count is not None})
    if not counts:
        return "-"
    low, high = counts[0] / 1e6, counts[-1] / 1e6
    return f"{low:.2f} M" if low == high else f"{low:.2f}-{high:.2f} M"


def long_rows(report: Report, stats: dict) -> list[dict[str, Any]]:
    """Tidy rows (:data:`CSV_COLUMNS`), methods and columns in table order."""
    rows = []
    for method in report.methods:
        model = report.method_models[method]
        for column in report.columns:
            for output in OUTPUTS:
                for metric in METRICS:
                    value = stats.get((method, column, output, metric))
                    if value is None:
                        continue
                    rows.append(
                        {
                            "method": method,
                            "model": model,
                            **setting_fields(column, output, metric),
                            "mean": value.mean,
                            "std": value.std,
                            "n_seeds": value.n_seeds,
                            "seed_sd": value.seed_sd,
                        }
                    )
    return rows


def report_csv(rows: list[dict[str, Any]], columns: Sequence[str] = CSV_COLUMNS) -> str:
    """CSV text of :func:`long_rows` (or :func:`paired_long_rows` with :data:`PAIRED_COLUMNS`);
    floats in full precision (``repr``), missing as empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: "" if v is None else repr(v) if isinstance(v, float) else v for k, v in row.items()}
        )
    return buffer.getvalue()
