"""Per-cell statistics of a report: mean and std over volumes, over seeds, and the best method per
column.
"""

from __future__ import annotations

import math
import statistics
from typing import Optional, Sequence

from cmfnet.commands.report.records import HIGHER_IS_BETTER, CellStats, Column, Report, Run
from cmfnet.mri.metrics import (
    METRICS,
    OUTPUTS,
    metric_digits,
    score_key,
    std_key,
)


def cell_stats(runs: Sequence[Run], output: str, metric: str) -> Optional[CellStats]:
    """Aggregate one metric over the seeds of a cell; None when no run reports it."""
    key = score_key(output, metric)
    have = [r for r in runs if r.metrics.get(key) is not None]
    if not have:
        return None
    means = [float(r.metrics[key]) for r in have]
    stds = [
        math.nan if r.metrics.get(std_key(key)) is None else float(r.metrics[std_key(key)])
        for r in have
    ]
    seed_sd = statistics.stdev(means) if len(means) > 1 else None
    return CellStats(
        math.fsum(means) / len(means), math.fsum(stds) / len(stds), len(means), seed_sd
    )


def all_stats(report: Report) -> dict[tuple[str, Column, str, str], CellStats]:
    """``(method, column, output, metric) -> CellStats`` for every filled cell."""
    stats = {}
    for method in report.methods:
        for column in report.columns:
            runs = report.runs_of(method, column)
            for output in OUTPUTS:
                for metric in METRICS:
                    value = cell_stats(runs, output, metric)
                    if value is not None:
                        stats[(method, column, output, metric)] = value
    return stats


def best_methods(
    stats: dict, methods: Sequence[str], column: Column, output: str, metric: str
) -> set[str]:
    """Methods holding the best shown value (rounded to
    :data:`~cmfnet.mri.metrics.METRIC_DIGITS`) of a column and metric."""
    shown = {
        m: round(stats[(m, column, output, metric)].mean, metric_digits(metric))
        for m in methods
        if (m, column, output, metric) in stats
    }
    shown = {m: v for m, v in shown.items() if math.isfinite(v)}
    if not shown:
        return set()
    best = max(shown.values()) if HIGHER_IS_BETTER[metric] else min(shown.values())
    return {m for m, v in shown.items() if v == best}
