"""``report.md``: the SR and rec tables of each regime with their paired comparisons, failures and
figures.
"""

from __future__ import annotations

from typing import Sequence

from cmfnet.commands.report.compare import ALPHA
from cmfnet.commands.report.paired import PAIRED_LINE, Pairing, paired_markdown
from cmfnet.commands.report.records import OUTPUT_TITLES, Report, Run
from cmfnet.commands.report.tables import NUMBERS_LINE, table_rows
from cmfnet.mri.metrics import (
    OUTPUTS,
)
from cmfnet.runs.tables import markdown_table

REGIMES_LINE = (
    "These runs differ in data set, scoring or trainer precision: each combination has its own "
    "tables and comparisons below, never mixed."
)


#: what each ``scoring`` choice (conf/scoring/) does to the outputs before they are scored
SCORING_NOTES = {
    "fastmri": "outputs scored as they are (fastMRI's convention)",
    "fastmri_nonneg": "outputs clamped at zero before scoring",
    "release": (
        "the CMF-Net release's: SR output only, target clamped at scale x (mean +- 6 std) of "
        "the zero-filled input before scoring (cmfnet/mri/scoring.py)"
    ),
}


def scoring_line(runs: Sequence[Run]) -> str:
    """Which scoring the runs' numbers use (``scoring`` in metrics.json; runs made before it was
    recorded used fastMRI's convention)."""
    used = sorted({str(run.metrics.get("scoring", "fastmri")) for run in runs})
    described = "; ".join(
        f"`{name}`: {SCORING_NOTES.get(name, 'see conf/scoring/')}" for name in used
    )
    return f"Scoring: {described or 'no runs'}."


def output_tables(report: Report, stats: dict, output: str) -> list[str]:
    """One output's tables, one per regime, each under a heading naming it when there are
    several."""
    if not report.methods:
        return ["No jobs with a known method and setting.", ""]
    lines = []
    for regime in report.regimes:
        if len(report.regimes) > 1:
            lines += [f"### {report.regime_title(regime)}", ""]
        scored = any(key[2] == output and key[1].regime == regime for key in stats)
        if scored:
            lines += markdown_table(*table_rows(report, stats, output, True, regime))
        else:
            lines.append("Not scored in this scoring.")
        lines.append("")
    return lines


def report_markdown(
    report: Report, stats: dict, pairing: Pairing, figures: list[str], figure_notes: list[str]
) -> str:
    """The whole report.md: each output's tables and paired comparisons, the failures,
    superseded runs and the figures."""
    lines = [
        "# Report: " + ", ".join(f"`{d}`" for d in report.sweep_dirs),
        "",
        NUMBERS_LINE,
        "",
        scoring_line(report.runs),
        "",
    ]
    if pairing.results:
        lines += [
            PAIRED_LINE.format(
                reference=pairing.reference,
                resamples=pairing.resamples,
                seed=pairing.seed,
                alpha=ALPHA,
            ),
            "",
        ]
    if len(report.regimes) > 1:
        lines += [REGIMES_LINE, ""]
    for output in OUTPUTS:
        lines += [f"## {OUTPUT_TITLES[output]}", ""]
        lines += output_tables(report, stats, output)
        lines += paired_markdown(report, pairing, output)
    lines += ["## Failed jobs", ""]
    for failure in report.failures:
        rerun = f" (re-run completed: `{failure.rerun}`)" if failure.rerun else ""
        lines.append(f"- `{failure.job_dir}` ({failure.what}): {failure.error}{rerun}")
    if not report.failures:
        lines.append("None.")
    if report.superseded:
        lines += [
            "",
            "## Superseded runs (the same method, setting and seed completed again later)",
            "",
        ]
        lines += [f"- `{old}` -> replaced by `{new}`" for old, new in report.superseded]
    lines += ["", "## Figures", ""]
    lines += [f"- `{name}`" for name in figures] + [f"- {note}" for note in figure_notes]
    if not figures and not figure_notes:
        lines.append("None.")
    return "\n".join(lines) + "\n"
