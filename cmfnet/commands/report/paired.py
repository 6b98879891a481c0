"""Paired comparisons of each method with the reference method on the same test volumes
(:mod:`cmfnet.commands.report.compare`), as table rows and CSV rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from cmfnet.commands.report.compare import NotComparable, Paired, pair_runs, seeds_left_out
from cmfnet.commands.report.records import (
    COMPARED_METRICS,
    OUTPUT_NAMES,
    PAPER_NAMES,
    SETTING_COLUMNS,
    Column,
    Report,
    Run,
    setting_fields,
)
from cmfnet.mri.metrics import (
    METRIC_LABELS,
    OUTPUTS,
    VOLUME_SCORES_FILE,
    metric_digits,
    read_volume_scores,
)
from cmfnet.runs.tables import markdown_table

#: the columns of ``<name>_paired.csv`` (:func:`paired_long_rows`)
PAIRED_COLUMNS = (
    "method",
    "model",
    "reference",
    *SETTING_COLUMNS,
    "diff",
    "ci_low",
    "ci_high",
    "p",
    "n_volumes",
    "n_seeds",
    "significant",
    "note",
)


PAIRED_LINE = (
    "Paired differences: Δ = method − `{reference}` on the same test volumes (higher PSNR "
    "and SSIM are better). Each run's per-volume scores (`test_volumes.csv`) are paired by "
    "(seed, volume) on the seeds both methods ran, and each volume's differences are averaged "
    "over those seeds, so n is the number of test volumes whatever the seeds. Cell: mean "
    "difference [95% percentile bootstrap interval over volumes: {resamples} resamples, seed "
    "{seed}]; p: two-sided Wilcoxon signed-rank test over volumes (over n volumes it cannot "
    "fall below 2/2^n: 0.125 for 4). **n.s.**: not significant (the interval contains 0, or "
    "p ≥ {alpha})."
)


@dataclass(frozen=True)
class Comparison:
    """A method against the reference in one column, output and metric: the numbers (None when
    the pair cannot be made) and a note (why not, or the seeds left out)."""

    paired: Optional[Paired]
    note: str = ""


@dataclass
class Pairing:
    """The reference method, the bootstrap's settings, every :class:`Comparison` by
    ``(method, column, output, metric)`` and the reference run each method was paired with
    (:func:`reference_for`)."""

    reference: str
    resamples: int
    seed: int
    results: dict[tuple[str, Column, str, str], Comparison] = field(default_factory=dict)
    paired_with: dict[str, str] = field(default_factory=dict)


def reference_for(report: Report, reference: str, method: str) -> str:
    """The reference method ``method`` is paired with: where the sweeps vary further overrides
    (``CMF-Net [optimizer.lr=0.001]``), the reference's method with the same overrides if it ran
    them, so that a variant is compared with the reference under the same recipe; else
    ``reference`` itself."""
    same = reference + report.variant_of(method)
    return same if same in report.methods else reference


def seed_scores(
    runs: Sequence[Run], output: str, metric: str, cache: dict[Path, dict]
) -> dict[int, dict[str, float]]:
    """seed -> volume -> score of one output and metric, from each run's
    :data:`~cmfnet.mri.metrics.VOLUME_SCORES_FILE` in the run's (table's) scoring; ``cache`` keeps
    the files read. Raises NotComparable naming the job without such scores."""
    found = {}
    for run in runs:
        path = run.job_dir / VOLUME_SCORES_FILE
        if path not in cache:
            if not path.is_file():
                raise NotComparable(
                    f"`{run.job_dir}` has no {VOLUME_SCORES_FILE} (made before per-volume "
                    "scores were saved)"
                )
            try:
                cache[path] = read_volume_scores(path)
            except ValueError as err:
                raise NotComparable(str(err)) from None
        scoring = str(run.metrics.get("scoring", "fastmri"))
        volumes = cache[path].get((scoring, output))
        if not volumes:
            raise NotComparable(f"`{path}` holds no {scoring} {output} scores")
        found[run.seed] = {name: values[metric] for name, values in volumes.items()}
    return found


def reference_method(report: Report, name: str) -> str:
    """The method ``name`` means: a method of the report as named, else the method of the model
    config ``name`` (``cmfnet`` -> ``CMF-Net``, :data:`PAPER_NAMES`)."""
    return name if name in report.methods else PAPER_NAMES.get(name, name)


def pair_with_reference(
    report: Report, stats: dict, reference: str, resamples: int, seed: int
) -> Pairing:
    """Every method with runs in a column where it has scores, against ``reference`` there
    (:mod:`cmfnet.commands.report.compare`), for each output and :data:`COMPARED_METRICS`."""
    pairing = Pairing(reference, resamples, seed)
    cache: dict[Path, dict] = {}
    for column in report.columns:
        for method in report.methods:
            against = reference_for(report, reference, method)
            ours = report.runs_of(method, column)
            if method == against or not ours:
                continue
            pairing.paired_with[method] = against
            theirs = report.runs_of(against, column)
            left_out = seeds_left_out([r.seed for r in ours], [r.seed for r in theirs])
            # only the runs of common seeds are read (all when none is common, to say so)
            mine = [r for r in ours if r.seed not in left_out] or ours
            paired_with = [r for r in theirs if r.seed not in left_out] or theirs
            for output in OUTPUTS:
                for metric in COMPARED_METRICS:
                    if (method, column, output, metric) not in stats:
                        continue
                    if (against, column, output, metric) not in stats:
                        result = Comparison(None, f"no {against} {output} scores in this setting")
                    else:
                        try:
                            paired = pair_runs(
                                seed_scores(mine, output, metric, cache),
                                seed_scores(paired_with, output, metric, cache),
                                resamples,
                                seed,
                            )
                        except NotComparable as err:
                            result = Comparison(None, str(err))
                        else:
                            note = (
                                f"seed(s) {', '.join(map(str, left_out))} left out (run by one "
                                "side only)"
                                if left_out
                                else ""
                            )
                            result = Comparison(paired, note)
                    pairing.results[(method, column, output, metric)] = result
    return pairing


def format_paired(paired: Optional[Paired], metric: str) -> str:
    """``-1.23 [-1.80, -0.70]``, then ``n.s.`` when not significant; ``n/a`` without numbers."""
    if paired is None:
        return "n/a"
    digits = metric_digits(metric)
    text = f"{paired.diff:+.{digits}f} [{paired.ci_low:+.{digits}f}, {paired.ci_high:+.{digits}f}]"
    return text if paired.significant else f"{text} n.s."


def format_p(paired: Optional[Paired]) -> str:
    if paired is None:
        return "n/a"
    return f"{paired.p:.3f}" if paired.p >= 0.001 else f"{paired.p:.1e}"


def paired_rows(
    report: Report, pairing: Pairing, output: str, regime: tuple[str, ...]
) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows (a method in a setting) and notes of one output's comparison in one
    regime."""
    header = ["method", "setting", "volumes × seeds"]
    for metric in COMPARED_METRICS:
        unit = " (dB)" if metric == "psnr" else ""
        header += [f"Δ {METRIC_LABELS[metric]}{unit} [95% CI]", f"p ({METRIC_LABELS[metric]})"]
    rows, notes = [], []
    for method in report.methods:
        for column in report.columns_of(regime):
            found = [pairing.results.get((method, column, output, m)) for m in COMPARED_METRICS]
            if not any(found):
                continue
            numbers = next((c.paired for c in found if c and c.paired), None)
            size = f"{numbers.n_volumes} × {numbers.n_seeds}" if numbers else "-"
            row = [method, report.column_label(column, in_table=True), size]
            for comparison, metric in zip(found, COMPARED_METRICS):
                paired = comparison.paired if comparison else None
                row += [format_paired(paired, metric), format_p(paired)]
            rows.append(row)
            where = f"{method}, {report.column_label(column, in_table=True)}"
            notes += sorted({f"{where}: {c.note}" for c in found if c and c.note})
    return header, rows, notes


def paired_markdown(report: Report, pairing: Pairing, output: str) -> list[str]:
    """The section comparing every method with the reference on one output."""
    reference = pairing.reference
    lines = [f"## Paired differences from `{reference}`: {OUTPUT_NAMES[output]} output", ""]
    if not report.has_method(reference):
        return lines + [f"No runs of `{reference}`; `--reference METHOD` picks another.", ""]
    if any(against != reference for against in pairing.paired_with.values()):
        lines += [
            f"A method that varies further overrides is paired with `{reference}` under the "
            "same overrides (`method [overrides]` minus "
            f"`{reference} [overrides]`).",
            "",
        ]
    if not any(key[2] == output for key in pairing.results):
        return lines + ["Nothing to compare.", ""]
    for regime in report.regimes:
        header, rows, notes = paired_rows(report, pairing, output, regime)
        if not rows:
            continue
        if len(report.regimes) > 1:
            lines += [f"### {report.regime_title(regime)}", ""]
        lines += markdown_table(header, rows) + [""]
        lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    return lines


def paired_long_rows(report: Report, pairing: Pairing) -> list[dict[str, Any]]:
    """Tidy rows (:data:`PAIRED_COLUMNS`) of every comparison, in table order."""
    rows = []
    for method in report.methods:
        for column in report.columns:
            for output in OUTPUTS:
                for metric in COMPARED_METRICS:
                    comparison = pairing.results.get((method, column, output, metric))
                    if comparison is None:
                        continue
                    paired = comparison.paired
                    numbers = (
                        {
                            "diff": paired.diff,
                            "ci_low": paired.ci_low,
                            "ci_high": paired.ci_high,
                            "p": paired.p,
                            "n_volumes": paired.n_volumes,
                            "n_seeds": paired.n_seeds,
                            "significant": paired.significant,
                        }
                        if paired
                        else {}
                    )
                    rows.append(
                        {
                            "method": method,
                            "model": report.method_models[method],
                            "reference": pairing.paired_with.get(method, pairing.reference),
                            **setting_fields(column, output, metric),
                            **numbers,
                            "note": comparison.note,
                        }
                    )
    return rows
