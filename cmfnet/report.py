"""``cmfnet report SWEEP_DIR [SWEEP_DIR ...]``: paper-style tables and figures from sweeps.

Reads every job's ``metrics.json`` (:func:`cmfnet.sweep.collect_results`) of one or more sweep
folders (``multirun/<sweep>/<timestamp>``; several are merged, e.g. a sweep and a re-run) and
writes into ``--out`` (default: the first sweep folder):

- ``report.md`` (``--name`` changes the base name): an SR table (the headline) and a rec
  table, rows = methods, columns = scale x acceleration, cells = mean ± std over test volumes,
  the best value per column and metric in bold, each followed by its paired comparison with
  the reference method (below); then failed and superseded jobs and the figures. With
  several seeds of one cell, a cell reads ``mean ± std (seeds: n, sd s)``: the mean over seeds
  of each run's mean over volumes ± the mean over seeds of each run's std over volumes, then
  the number of seeds and the sample standard deviation (ddof=1) over seeds of the per-run
  means.
- ``report.csv``: the same numbers in tidy long format, one row per method x cell x output x
  metric (``method, model, scale, accel, data, mask, scoring, precision, output, metric, mean,
  std, n_seeds, seed_sd``; ``seed_sd`` is empty for a single seed).
- ``report_paired.csv``: the paired comparisons, one row per method x setting x output x
  metric (:data:`PAIRED_COLUMNS`: ``diff, ci_low, ci_high, p, n_volumes, n_seeds,
  significant``; empty numbers and a ``note`` where the pair cannot be made).
- ``psnr_vs_accel.png``, ``learning_curves.png`` (validation SR PSNR per epoch, from each run's
  ``history.csv``) and ``qualitative_x{scale}_r{accel}.png`` (:mod:`cmfnet.figures`); for a
  hyperparameter search, ``search_<study>.png`` (:mod:`cmfnet.search_plot`).
- with ``--wandb`` (default), a W&B run (offline unless ``WANDB_MODE`` says otherwise) in the
  sweep's group ``<sweep_name>/<timestamp>`` holding the tables and figures.

Paired comparison: each method against the reference (``--reference``, default ``cmfnet``:
CMF-Net) on the same test volumes, per setting and output, for PSNR and SSIM
(:mod:`cmfnet.compare`: from each run's ``test_volumes.csv``, pairs by (seed, volume) on the
seeds both have, averaged over those seeds per volume; mean difference, bootstrap 95%
interval over volumes, Wilcoxon signed-rank p). A run without ``test_volumes.csv`` (made before
it was written) gives ``n/a`` with a note naming the job.

Separate tables: runs that differ in data set, scoring or trainer precision (``data``,
``scoring`` and ``precision`` in metrics.json; the precision of a run made before it was
recorded is read from its ``config.yaml``) are never in one table. Each combination gets its
own SR table, rec table and comparison, under a heading naming it; pairs are made within one.

Which runs are one method: runs that differ only in seed. A job's Hydra overrides other than
the cell (``model, data, mask, scale, accel, scoring, trainer.precision``), the seed and
:data:`NEUTRAL_OVERRIDE_KEYS` (e.g. ``loss.w_rec=0.2`` in the loss-weight sweep) are appended
to its method name when they vary across the merged jobs. A method of the paper's comparison
is named as the paper names it (:data:`PAPER_NAMES`: ``CMF-Net``, ``UNet-EDSR†``, ...), any
other by its model config. When the same method, cell and seed completed more than once, the
job given last wins (later sweep folder, then higher job number) and the others are listed as
superseded. Tables and CSV are byte-identical when the command is re-run on the same folders.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
import statistics
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from cmfnet.compare import ALPHA, NotComparable, Paired, pair_runs, seeds_left_out
from cmfnet.metrics import (
    METRIC_KEYS,
    METRIC_LABELS,
    METRICS,
    OUTPUTS,
    VOLUME_SCORES_FILE,
    read_volume_scores,
    score_key,
    std_key,
)

#: The paper's seven compared methods (its Figure 2, in its order): model config -> its name there
#: († = guided by the second contrast).
PAPER_NAMES = {
    "t2net": "T2Net",
    "unet_edsr_mc": "UNet-EDSR†",
    "unet_swinir": "UNet-SwinIR",
    "mtrans_edsr": "MTrans-EDSR",
    "mtrans_edsr_mc": "MTrans-EDSR†",
    "mtrans_swinir_mc": "MTrans-SwinIR†",
    "cmfnet": "CMF-Net",
}
#: table rows, in this order (the paper's methods in its order, CMF-Net's ablations and our
#: variant just before it); other methods follow alphabetically
METHOD_ORDER = (
    "zero_filled",
    "edsr",
    "unet_edsr",
    *list(PAPER_NAMES)[:-1],
    "cmfnet_single",
    "cmfnet_no_mfa_mmf",
    "cmfnet_no_mfa",
    "cmfnet_no_mmf",
    "cmfnet_mmf_additive",
    "cmfnet",
)
OUTPUT_NAMES = {"sr": "SR", "rec": "rec"}
OUTPUT_TITLES = {
    "sr": "Super-resolution (SR output, headline)",
    "rec": "Reconstruction (rec output)",
}
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "nmse": False}
#: decimals shown (and compared when choosing the bold value) per metric
DIGITS = {"psnr": 2, "ssim": 4, "nmse": 4}
#: override keys (or key prefixes before a dot) that do not make a run another method (``cell``
#: presets only set scale and accel, which metrics.json records)
NEUTRAL_OVERRIDE_KEYS = (
    "sweeps",
    "sweep_name",
    "launcher",
    "logger",
    "callbacks",
    "hydra",
    "ckpt_path",
    "trainer.devices",
    "trainer.accelerator",
    "cell",
)
#: override keys that place a run in a table cell or mark it as a seed
IDENTITY_OVERRIDE_KEYS = (
    "model",
    "data",
    "mask",
    "scale",
    "accel",
    "seed",
    "scoring",
    "trainer.precision",
)
#: what runs of one table share (:attr:`Column.regime`): runs differing in any are in separate
#: tables
REGIME_FIELDS = ("data", "scoring", "precision")
#: a run's precision when neither its metrics.json nor its config.yaml records one
UNKNOWN_PRECISION = "unknown"
#: the metrics the paired comparisons test
COMPARED_METRICS = ("psnr", "ssim")
CSV_COLUMNS = (
    "method",
    "model",
    "scale",
    "accel",
    "data",
    "mask",
    "scoring",
    "precision",
    "output",
    "metric",
    "mean",
    "std",
    "n_seeds",
    "seed_sd",
)
#: the columns of ``<name>_paired.csv`` (:func:`paired_long_rows`)
PAIRED_COLUMNS = (
    "method",
    "model",
    "reference",
    "scale",
    "accel",
    "data",
    "mask",
    "scoring",
    "precision",
    "output",
    "metric",
    "diff",
    "ci_low",
    "ci_high",
    "p",
    "n_volumes",
    "n_seeds",
    "significant",
    "note",
)
#: default reference of the paired comparisons (a model config: CMF-Net), bootstrap resamples
#: and seed
REFERENCE = "cmfnet"
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
REGIMES_LINE = (
    "These runs differ in data set, scoring or trainer precision: each combination has its own "
    "tables and comparisons below, never mixed."
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
NUMBERS_LINE = (
    "Each cell: mean ± std over test volumes of fastMRI's per-volume PSNR (dB), SSIM and NMSE, "
    "computed on de-normalised outputs against their targets (data range = volume max), as the "
    "scoring below says. "
    "With several seeds: mean over seeds of each run's mean ± mean over seeds of each run's std "
    "over volumes, then (seeds: n, sd s) with s the sample sd over seeds of the per-run means. "
    "**Bold**: best per column (max PSNR/SSIM, min NMSE) at the shown precision."
)


@dataclass(frozen=True, order=True)
class Column:
    """A table column: one acquisition setting, in one data set, scoring and precision."""

    data: str
    scoring: str
    precision: str
    mask: str
    scale: int
    accel: int

    @property
    def regime(self) -> tuple[str, ...]:
        """The :data:`REGIME_FIELDS` values: columns of one table share them."""
        return tuple(getattr(self, name) for name in REGIME_FIELDS)

    def label(self, shown: Sequence[str] = ()) -> str:
        """``x2 / R4``, plus the values of the ``shown`` fields (those that vary)."""
        parts = [f"x{self.scale}", f"R{self.accel}"]
        return " / ".join(parts + [str(getattr(self, name)) for name in shown])

    def slug(self, shown: Sequence[str] = ()) -> str:
        """File-name part: ``x2_r4`` (plus the values of the ``shown`` fields)."""
        parts = [f"x{self.scale}", f"r{self.accel}"]
        parts += [str(getattr(self, name)) for name in shown]
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(parts))


@dataclass
class Run:
    """One completed job: its method name, table column, seed, folder and metrics.json."""

    method: str
    model: str
    column: Column
    seed: int
    job_dir: Path
    metrics: dict[str, Any]


@dataclass
class Failure:
    """A job without a completed metrics.json. ``key`` is (method, column, seed) when its
    metrics.json names them; ``rerun`` is the job that later completed the same key."""

    job_dir: Path
    what: str
    error: str
    key: Optional[tuple[str, Column, int]] = None
    rerun: Optional[Path] = None


@dataclass(frozen=True)
class CellStats:
    """One metric of one method in one column, aggregated over seeds (see the module doc)."""

    mean: float
    std: float
    n_seeds: int
    seed_sd: Optional[float]


@dataclass
class Report:
    """Everything the tables and figures are made of."""

    sweep_dirs: list[Path]
    runs: list[Run]
    failures: list[Failure]
    #: method name -> model config name, for every method of a run or a placed failure
    method_models: dict[str, str]
    superseded: list[tuple[Path, Path]] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        """Row order: :data:`METHOD_ORDER` by model, then other models alphabetically."""

        def key(method: str) -> tuple:
            model = self.method_models[method]
            rank = METHOD_ORDER.index(model) if model in METHOD_ORDER else len(METHOD_ORDER)
            return (rank, model, method)

        return sorted(self.method_models, key=key)

    @property
    def columns(self) -> list[Column]:
        """Settings of completed runs and of placed failures, by data, mask, scale, accel."""
        return sorted({r.column for r in self.runs} | {f.key[1] for f in self.failures if f.key})

    @property
    def varying(self) -> tuple[str, ...]:
        """The fields besides scale and accel whose values differ between columns."""
        return tuple(
            name
            for name in ("mask", *REGIME_FIELDS)
            if len({getattr(c, name) for c in self.columns}) > 1
        )

    @property
    def regimes(self) -> list[tuple[str, ...]]:
        """The :attr:`Column.regime` of every column, sorted: one set of tables each."""
        return sorted({c.regime for c in self.columns})

    def column_label(self, column: Column, in_table: bool = False) -> str:
        """The column's label; in a table, whose heading names the regime, without it."""
        shown = [n for n in self.varying if not (in_table and n in REGIME_FIELDS)]
        return column.label(shown)

    def regime_title(self, regime: tuple[str, ...]) -> str:
        """``data synthetic, scoring fastmri, precision 32-true``."""
        return ", ".join(f"{name} {value}" for name, value in zip(REGIME_FIELDS, regime))

    def columns_of(self, regime: tuple[str, ...]) -> list[Column]:
        """The columns of one regime (:attr:`Column.regime`)."""
        return [c for c in self.columns if c.regime == regime]

    def methods_in(self, columns: Sequence[Column]) -> list[str]:
        """The methods with a completed run or a placed failure in any of ``columns``."""
        placed = {(r.method, r.column) for r in self.runs}
        placed |= {f.key[:2] for f in self.failures if f.key}
        return [m for m in self.methods if any((m, c) in placed for c in columns)]

    def runs_of(self, method: str, column: Column) -> list[Run]:
        """The completed runs (one per seed) of a method in a column, by seed."""
        return sorted(
            (r for r in self.runs if r.method == method and r.column == column),
            key=lambda r: r.seed,
        )

    def failed_in(self, method: str, column: Column) -> bool:
        """Whether a job of this method in this column failed and was not re-run successfully."""
        return any(
            f.key is not None and f.key[:2] == (method, column) and f.rerun is None
            for f in self.failures
        )

    def group(self) -> str:
        """The W&B group of the first sweep folder, ``<sweep_name>/<timestamp>`` as training
        uses."""
        first = self.sweep_dirs[0].resolve()
        return f"{first.parent.name}/{first.name}"


# --------------------------------------------------------------------------------------------
# reading sweep folders
# --------------------------------------------------------------------------------------------


def _job_order(job_dir: Path) -> tuple:
    number, _, _ = job_dir.name.partition("_")
    return (int(number) if number.isdigit() else math.inf, job_dir.name)


def job_overrides(job_dir: Path) -> set[str]:
    """The job's Hydra overrides (``.hydra/overrides.yaml``) that could make it another method:
    ``key=value`` strings without the cell, seed and :data:`NEUTRAL_OVERRIDE_KEYS`."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return set()
    import yaml

    try:
        overrides = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: unreadable overrides ({err})") from err
    kept = set()
    for override in overrides:
        key = str(override).split("=", 1)[0].lstrip("+~")
        ignored = IDENTITY_OVERRIDE_KEYS + NEUTRAL_OVERRIDE_KEYS
        if key in ignored or key.split(".", 1)[0] in NEUTRAL_OVERRIDE_KEYS:
            continue
        kept.add(str(override))
    return kept


def identity_from_hydra(job_dir: Path) -> dict[str, Any]:
    """``model, data, mask, scale, accel, seed`` of a job from its ``.hydra`` record (for jobs
    killed before writing metrics.json); the keys that cannot be read are left out."""
    import yaml

    found: dict[str, Any] = {}
    try:
        config = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text()) or {}
        choices = (yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text()) or {})["hydra"][
            "runtime"
        ]["choices"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return found
    found.update(
        {k: choices[k] for k in ("model", "data", "mask") if isinstance(choices.get(k), str)}
    )
    found.update(
        {k: config[k] for k in ("scale", "accel", "seed") if isinstance(config.get(k), int)}
    )
    return found


def run_precision(row: dict, job_dir: Path) -> str:
    """A job's trainer precision: its metrics.json's, else its resolved ``config.yaml``'s (runs
    made before metrics.json recorded it), else :data:`UNKNOWN_PRECISION`."""
    if row.get("precision") is not None:
        return str(row["precision"])
    import yaml

    try:
        config = yaml.safe_load((job_dir / "config.yaml").read_text()) or {}
        precision = config["trainer"]["precision"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return UNKNOWN_PRECISION
    return UNKNOWN_PRECISION if precision is None else str(precision)


def _describe(row: dict) -> str:
    if "model" not in row:
        return "unknown setting"
    parts = [str(row["model"])]
    if "scale" in row and "accel" in row:
        parts.append(f"x{row['scale']} R{row['accel']}")
    if "seed" in row:
        parts.append(f"seed {row['seed']}")
    return ", ".join(parts)


def rescored(metrics: dict[str, Any], scoring: Optional[str], job_dir: Path) -> dict[str, Any]:
    """A completed job's metrics in the scoring ``scoring``: its own scores when the run was
    scored that way, else those its test also computed (``scorings`` in metrics.json, from
    ``module.also_score``); None keeps the run's own. Raises ValueError naming the job when it
    has no scores in that scoring."""
    own = str(metrics.get("scoring", "fastmri"))
    if scoring is None or scoring == own:
        return metrics
    also = (metrics.get("scorings") or {}).get(scoring)
    if also is None:
        offered = ", ".join([own, *sorted(metrics.get("scorings") or {})])
        raise ValueError(
            f"{job_dir}: not scored with '{scoring}' (its metrics.json has: {offered}); "
            "add the scoring to module.also_score or leave out --scoring"
        )
    return {**metrics, **{k: also.get(k) for k in METRIC_KEYS}, "scoring": scoring}


def load_report(sweep_dirs: Sequence[Path], scoring: Optional[str] = None) -> Report:
    """Collect, name and de-duplicate the jobs of the given sweep folders (see the module doc);
    with ``scoring``, every completed job's numbers in that scoring (:func:`rescored`).

    Raises ValueError naming the folder when it does not exist or holds no job folders.
    """
    from cmfnet.sweep import collect_results

    sweep_dirs = [Path(d) for d in sweep_dirs]
    jobs: list[tuple[Path, dict, set[str]]] = []
    for sweep_dir in sweep_dirs:
        if not sweep_dir.is_dir():
            raise ValueError(f"{sweep_dir}: sweep folder not found")
        rows = collect_results(sweep_dir)
        if not rows:
            raise ValueError(
                f"{sweep_dir}: no job folders with metrics.json "
                "(expected a multirun/<sweep>/<timestamp> folder)"
            )
        for row in sorted(rows, key=lambda r: _job_order(sweep_dir / r["job"])):
            job_dir = sweep_dir / row["job"]
            if "model" not in row:
                row = {**identity_from_hydra(job_dir), **row}
            jobs.append((job_dir, row, job_overrides(job_dir)))
    common = set.intersection(*(extra for _, _, extra in jobs))

    chosen: dict[tuple, Run] = {}
    superseded: list[tuple[Path, Path]] = []
    failures: list[Failure] = []
    method_models: dict[str, str] = {}
    for job_dir, row, extra in jobs:
        varying = sorted(extra - common)
        model = str(row.get("model", "?"))
        name = PAPER_NAMES.get(model, model)
        method = f"{name} [{', '.join(varying)}]" if varying else name
        known = all(k in row for k in ("model", "scale", "accel", "seed"))
        column = Column(
            str(row.get("data", "?")),
            scoring or str(row.get("scoring", "fastmri")),
            run_precision(row, job_dir),
            str(row.get("mask", "?")),
            int(row.get("scale", 0)),
            int(row.get("accel", 0)),
        )
        key = (method, column, int(row["seed"])) if known else None
        if key is not None:
            method_models[method] = model
        if row.get("status") != "completed" or key is None:
            failures.append(
                Failure(job_dir, _describe(row), str(row.get("error", "unknown error")), key)
            )
            continue
        if key in chosen:
            superseded.append((chosen[key].job_dir, job_dir))
        chosen[key] = Run(method, model, column, key[2], job_dir, rescored(row, scoring, job_dir))
    for failure in failures:
        if failure.key in chosen:
            failure.rerun = chosen[failure.key].job_dir
    return Report(sweep_dirs, list(chosen.values()), failures, method_models, superseded)


# --------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------


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
    """Methods holding the best shown value (rounded to :data:`DIGITS`) of a column and metric."""
    shown = {
        m: round(stats[(m, column, output, metric)].mean, DIGITS[metric])
        for m in methods
        if (m, column, output, metric) in stats
    }
    shown = {m: v for m, v in shown.items() if math.isfinite(v)}
    if not shown:
        return set()
    best = max(shown.values()) if HIGHER_IS_BETTER[metric] else min(shown.values())
    return {m for m, v in shown.items() if v == best}


def format_cell(value: CellStats, metric: str, bold: bool = False) -> str:
    """``31.25 ± 0.84``, the mean in bold if asked, then ``(seeds: n, sd s)`` for several seeds."""
    digits = DIGITS[metric]
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


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


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
                            "scale": column.scale,
                            "accel": column.accel,
                            "data": column.data,
                            "mask": column.mask,
                            "scoring": column.scoring,
                            "precision": column.precision,
                            "output": output,
                            "metric": metric,
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


# --------------------------------------------------------------------------------------------
# paired comparisons with the reference method
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A method against the reference in one column, output and metric: the numbers (None when
    the pair cannot be made) and a note (why not, or the seeds left out)."""

    paired: Optional[Paired]
    note: str = ""


@dataclass
class Pairing:
    """The reference method, the bootstrap's settings and every :class:`Comparison` by
    ``(method, column, output, metric)``."""

    reference: str
    resamples: int
    seed: int
    results: dict[tuple[str, Column, str, str], Comparison] = field(default_factory=dict)


def seed_scores(
    runs: Sequence[Run], output: str, metric: str, cache: dict[Path, dict]
) -> dict[int, dict[str, float]]:
    """seed -> volume -> score of one output and metric, from each run's
    :data:`~cmfnet.metrics.VOLUME_SCORES_FILE` in the run's (table's) scoring; ``cache`` keeps
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
    (:mod:`cmfnet.compare`), for each output and :data:`COMPARED_METRICS`."""
    pairing = Pairing(reference, resamples, seed)
    cache: dict[Path, dict] = {}
    for column in report.columns:
        theirs = report.runs_of(reference, column)
        for method in report.methods:
            ours = report.runs_of(method, column)
            if method == reference or not ours:
                continue
            left_out = seeds_left_out([r.seed for r in ours], [r.seed for r in theirs])
            # only the runs of common seeds are read (all when none is common, to say so)
            mine = [r for r in ours if r.seed not in left_out] or ours
            paired_with = [r for r in theirs if r.seed not in left_out] or theirs
            for output in OUTPUTS:
                for metric in COMPARED_METRICS:
                    if (method, column, output, metric) not in stats:
                        continue
                    if (reference, column, output, metric) not in stats:
                        result = Comparison(None, f"no {reference} {output} scores in this setting")
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
    digits = DIGITS[metric]
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
    if reference not in report.methods:
        return lines + [f"No runs of `{reference}`; `--reference METHOD` picks another.", ""]
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
                            "reference": pairing.reference,
                            "scale": column.scale,
                            "accel": column.accel,
                            "data": column.data,
                            "mask": column.mask,
                            "scoring": column.scoring,
                            "precision": column.precision,
                            "output": output,
                            "metric": metric,
                            **numbers,
                            "note": comparison.note,
                        }
                    )
    return rows


#: what each ``scoring`` choice (conf/scoring/) does to the outputs before they are scored
SCORING_NOTES = {
    "fastmri": "outputs scored as they are (fastMRI's convention)",
    "fastmri_nonneg": "outputs clamped at zero before scoring",
    "release": (
        "the CMF-Net release's: SR output only, target clamped at scale x (mean +- 6 std) of "
        "the zero-filled input before scoring (cmfnet/scoring.py)"
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


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def psnr_panels(
    report: Report, stats: dict
) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """SR PSNR curves for :func:`cmfnet.figures.plot_metric_vs_accel`: one panel per scale
    (and mask, data, scoring and precision when they vary), points (accel, mean, std over
    volumes)."""
    panels: dict[str, dict[str, list]] = {}
    for column in report.columns:
        title = " / ".join([f"SR x{column.scale}"] + [getattr(column, n) for n in report.varying])
        for method in report.methods:
            value = stats.get((method, column, "sr", "psnr"))
            if value is not None:
                std = value.std if math.isfinite(value.std) else 0.0
                panels.setdefault(title, {}).setdefault(method, []).append(
                    (column.accel, value.mean, std)
                )
    return panels


def curve_panels(
    report: Report, metric: str = "val/sr_psnr"
) -> dict[str, dict[str, list[list[tuple[float, float]]]]]:
    """Learning curves for :func:`cmfnet.figures.plot_learning_curves` from each run's
    ``history.csv``: one panel per column, one curve per run (seeds of a method share a colour).
    Runs without a history.csv, or without ``metric`` in it, are left out."""
    from cmfnet.lit.history import read_history

    panels: dict[str, dict[str, list]] = {}
    for column in report.columns:
        for method in report.methods:
            for run in report.runs_of(method, column):
                path = run.job_dir / "history.csv"
                if not path.is_file():
                    continue
                points = [
                    (int(row["epoch"]), row[metric]) for row in read_history(path) if metric in row
                ]
                if points:
                    panels.setdefault(report.column_label(column), {}).setdefault(
                        method, []
                    ).append(points)
    return panels


def load_example(
    path: Path, fname: Optional[str] = None, slice_idx: Optional[int] = None
) -> Optional[dict[str, Any]]:
    """The first kept example of an ``examples.npz`` (or the one of the given slice): arrays
    ``input, aux, sr, sr_target`` plus ``fname, slice_idx``; None if absent."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        for i in range(int(data["count"])):
            example = {key: data[f"{key}_{i}"] for key in ("input", "aux", "sr", "sr_target")}
            example["fname"] = str(data[f"fname_{i}"])
            example["slice_idx"] = int(data[f"slice_idx_{i}"])
            if fname is None or (example["fname"], example["slice_idx"]) == (fname, slice_idx):
                return example
    return None


def qualitative_figure(
    report: Report, column: Column, out: Path
) -> tuple[Optional[str], list[str]]:
    """Draw ``qualitative_<slug>.png`` for one column from the runs' examples.npz (each
    method's lowest seed); returns the file name (None if no run kept examples) and notes on
    methods left out."""
    from cmfnet.figures import plot_qualitative

    reference, outputs, notes = None, [], []
    for method in report.methods:
        runs = [r for r in report.runs_of(method, column) if (r.job_dir / "examples.npz").is_file()]
        if not report.runs_of(method, column):
            continue
        if not runs:
            notes.append(f"{method}: no examples.npz")
            continue
        path = runs[0].job_dir / "examples.npz"
        try:
            example = load_example(
                path, *((reference["fname"], reference["slice_idx"]) if reference else ())
            )
        except (OSError, KeyError, ValueError) as err:
            notes.append(f"{method}: unreadable {path} ({err})")
            continue
        if example is None:
            notes.append(
                f"{method}: {path} lacks {reference['fname']} slice {reference['slice_idx']}"
            )
            continue
        if reference is not None and example["sr"].shape != reference["sr_target"].shape:
            notes.append(
                f"{method}: its output {example['sr'].shape} differs from the HR target "
                f"{reference['sr_target'].shape} of the first run (different data settings)"
            )
            continue
        reference = reference or example
        outputs.append((method, example["sr"]))
    if reference is None:
        return None, notes
    name = f"qualitative_{column.slug(report.varying)}.png"
    title = (
        f"SR {report.column_label(column)}: {reference['fname']} slice {reference['slice_idx']}; "
        "per-slice PSNR/SSIM vs this HR slice, data range = slice max (tables: per volume)"
    )
    plot_qualitative(
        reference["sr_target"],
        outputs,
        out / name,
        title=title,
        lr_input=reference["input"],
        aux_input=reference["aux"],
    )
    return name, [f"{name}: {note}" for note in notes]


def write_figures(report: Report, stats: dict, out: Path) -> tuple[list[str], list[str]]:
    """All PNGs; returns their file names and notes on what could not be drawn."""
    from cmfnet.figures import plot_learning_curves, plot_metric_vs_accel

    names, notes = [], []
    panels = psnr_panels(report, stats)
    if panels:
        plot_metric_vs_accel(
            panels, out / "psnr_vs_accel.png", title="SR PSNR (mean ± std over test volumes)"
        )
        names.append("psnr_vs_accel.png")
    curves = curve_panels(report)
    if curves:
        plot_learning_curves(
            curves,
            out / "learning_curves.png",
            title="validation SR PSNR per epoch (history.csv of each run)",
        )
        names.append("learning_curves.png")
    else:
        notes.append("no learning curves: no run has a history.csv with val/sr_psnr")
    for column in report.columns:
        name, column_notes = qualitative_figure(report, column, out)
        notes += column_notes
        if name is None:
            notes.append(
                f"no qualitative figure for {report.column_label(column)}: no examples.npz"
            )
        else:
            names.append(name)
    return names, notes


# --------------------------------------------------------------------------------------------
# W&B
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sweep_dirs",
        nargs="+",
        type=Path,
        metavar="SWEEP_DIR",
        help="multirun/<sweep>/<timestamp> folder(s); several are merged (later ones win)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="output folder (default: the first SWEEP_DIR)"
    )
    parser.add_argument(
        "--name",
        default="report",
        metavar="NAME",
        help="base name of the tables: NAME.md, NAME.csv and NAME_paired.csv (default: report)",
    )
    parser.add_argument(
        "--reference",
        metavar="METHOD",
        help="the method every other is paired with: its name in the tables or its model config "
        f"(default: {REFERENCE}, i.e. {PAPER_NAMES[REFERENCE]})",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=RESAMPLES,
        metavar="N",
        help=f"bootstrap resamples of the paired intervals (default: {RESAMPLES})",
    )
    parser.add_argument(
        "--bootstrap-seed",
        type=int,
        default=BOOTSTRAP_SEED,
        metavar="SEED",
        help=f"seed of the bootstrap resampling (default: {BOOTSTRAP_SEED})",
    )
    parser.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log the tables and figures into a new W&B run (offline unless WANDB_MODE is set)",
    )
    parser.add_argument(
        "--wandb-project", default="cmfnet", metavar="NAME", help="W&B project (cmfnet)"
    )
    parser.add_argument(
        "--scoring",
        metavar="NAME",
        help="tables in this scoring (conf/scoring/): each run's own if it was scored so, else "
        "the one its test also computed (module.also_score); default: each run's own",
    )


def claim_report_folder(out: Path) -> Path:
    """``out`` claimed for a report: new, empty, a report folder or a sweep folder (a sweep run
    before cmfnet marked its folders is recognised by Hydra's ``multirun.yaml``)."""
    from cmfnet.ownership import claim_folder, mark_earlier_folder

    mark_earlier_folder(out, "sweep", lambda folder: (folder / "multirun.yaml").is_file())
    return claim_folder(out, "report", setting="--out", accept=("sweep",))


def build_report(
    sweep_dirs: Sequence[Path],
    out: Path,
    use_wandb: bool = False,
    wandb_project: str = "cmfnet",
    name: str = "report",
    scoring: Optional[str] = None,
    reference: Optional[str] = None,
    resamples: int = RESAMPLES,
    bootstrap_seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Write ``<name>.md``, ``<name>.csv``, ``<name>_paired.csv`` and the figures into ``out``
    (and the W&B run if asked); returns ``{"report", "markdown", "csv", "paired_csv", "figures",
    "wandb_run"}`` paths/objects. ``reference`` (a method or model config name, see
    :func:`reference_method`) None: :data:`REFERENCE`, and no comparison when the sweeps have
    none; a ``reference`` given that the sweeps lack is refused."""
    from cmfnet.io import write_text_atomic
    from cmfnet.search_plot import write_search_plots

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"--name {name!r}: expected a plain file name such as 'report'")
    if resamples < 1:
        raise ValueError(f"--bootstrap must be at least 1 resample, got {resamples}")
    report = load_report(sweep_dirs, scoring)
    compared_with = reference_method(report, reference or REFERENCE)
    if reference is not None and compared_with not in report.methods:
        raise ValueError(
            f"--reference {reference!r}: no such method or model in these sweeps "
            f"(methods: {', '.join(report.methods) or 'none'})"
        )
    out = claim_report_folder(Path(out))
    stats = all_stats(report)
    pairing = pair_with_reference(report, stats, compared_with, resamples, bootstrap_seed)
    figures, figure_notes = write_figures(report, stats, out)
    figures += write_search_plots(sweep_dirs, out)  # a hyperparameter search's trials
    markdown, table = out / f"{name}.md", out / f"{name}.csv"
    paired_table = out / f"{name}_paired.csv"
    write_text_atomic(markdown, report_markdown(report, stats, pairing, figures, figure_notes))
    write_text_atomic(table, report_csv(long_rows(report, stats)))
    write_text_atomic(paired_table, report_csv(paired_long_rows(report, pairing), PAIRED_COLUMNS))
    wandb_run = (
        log_to_wandb(report, stats, pairing, out, figures, wandb_project) if use_wandb else None
    )
    return {
        "report": report,
        "markdown": markdown,
        "csv": table,
        "paired_csv": paired_table,
        "figures": [out / figure for figure in figures],
        "wandb_run": wandb_run,
    }


def run(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else args.sweep_dirs[0]
    written = build_report(
        args.sweep_dirs,
        out,
        use_wandb=args.wandb,
        wandb_project=args.wandb_project,
        name=args.name,
        scoring=args.scoring,
        reference=args.reference,
        resamples=args.bootstrap,
        bootstrap_seed=args.bootstrap_seed,
    )
    report = written["report"]
    print(
        f"{len(report.runs)} completed runs, {len(report.failures)} failed jobs "
        f"-> {written['markdown']}, "
        f"{written['csv'].name}, {written['paired_csv'].name}, "
        f"{len(written['figures'])} figures"
    )
    if written["wandb_run"] is not None:
        print(f"W&B run: {written['wandb_run']}")
    return 0
