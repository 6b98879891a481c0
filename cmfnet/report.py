"""``cmfnet report SWEEP_DIR [SWEEP_DIR ...]``: paper-style tables and figures from sweeps.

Reads every job's ``metrics.json`` (:func:`cmfnet.sweep.collect_results`) of one or more sweep
folders (``multirun/<sweep>/<timestamp>``; several are merged, e.g. a sweep and a re-run) and
writes into ``--out`` (default: the first sweep folder):

- ``report.md`` (``--name`` changes the base name): an SR table (the headline) and a rec
  table, rows = methods, columns = scale x acceleration, cells = mean ± std over test volumes,
  the best value per column and metric in bold; then failed and superseded jobs and the
  figures. With several seeds of one cell, a cell reads ``mean ± std (seeds: n, sd s)``: the
  mean over seeds of each run's mean over volumes ±
  the mean over seeds of each run's std over volumes, then the number of seeds and the sample
  standard deviation (ddof=1) over seeds of the per-run means.
- ``report.csv``: the same numbers in tidy long format, one row per method x cell x output x
  metric (``method, model, scale, accel, data, mask, output, metric, mean, std, n_seeds,
  seed_sd``; ``seed_sd`` is empty for a single seed).
- ``psnr_vs_accel.png``, ``learning_curves.png`` (validation SR PSNR per epoch, from each run's
  ``history.csv``) and ``qualitative_x{scale}_r{accel}.png`` (:mod:`cmfnet.figures`).
- with ``--wandb`` (default), a W&B run (offline unless ``WANDB_MODE`` says otherwise) in the
  sweep's group ``<sweep_name>/<timestamp>`` holding the tables and figures.

Which runs are one method: runs that differ only in seed. A job's Hydra overrides other than
the cell (``model, data, mask, scale, accel``), the seed and :data:`NEUTRAL_OVERRIDE_KEYS`
(e.g. ``loss.w_rec=0.2`` in the loss-weight sweep) are appended to its method name when they
vary across the merged jobs. A method of the paper's comparison is named as the paper names it
(:data:`PAPER_NAMES`: ``CMF-Net``, ``UNet-EDSR†``, ...), any other by its model config. When
the same method, cell and seed completed more than once, the
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

from cmfnet.metrics import METRIC_KEYS, METRIC_LABELS, METRICS, OUTPUTS, score_key, std_key

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
IDENTITY_OVERRIDE_KEYS = ("model", "data", "mask", "scale", "accel", "seed")
CSV_COLUMNS = (
    "method",
    "model",
    "scale",
    "accel",
    "data",
    "mask",
    "output",
    "metric",
    "mean",
    "std",
    "n_seeds",
    "seed_sd",
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
    """A table column: one acquisition setting."""

    data: str
    mask: str
    scale: int
    accel: int

    def label(self, show_data: bool, show_mask: bool) -> str:
        """``x2 / R4``, plus the mask and data set names when they vary across the report."""
        parts = [f"x{self.scale}", f"R{self.accel}"]
        parts += [self.mask] if show_mask else []
        parts += [self.data] if show_data else []
        return " / ".join(parts)

    def slug(self, show_data: bool, show_mask: bool) -> str:
        """File-name part: ``x2_r4`` (plus mask/data when they vary)."""
        parts = [f"x{self.scale}", f"r{self.accel}"]
        parts += [self.mask] if show_mask else []
        parts += [self.data] if show_data else []
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
    def show_data(self) -> bool:
        return len({c.data for c in self.columns}) > 1

    @property
    def show_mask(self) -> bool:
        return len({c.mask for c in self.columns}) > 1

    def column_label(self, column: Column) -> str:
        return column.label(self.show_data, self.show_mask)

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
    report: Report, stats: dict, output: str, bold: bool
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one output's table: a method column, its parameter count, then one
    column per (setting, metric); empty cells read ``failed`` (a job failed) or ``-`` (never
    run)."""
    methods, columns = report.methods, report.columns
    header = ["method", "params"] + [
        f"{report.column_label(c)} {METRIC_LABELS[m]} {'↑' if HIGHER_IS_BETTER[m] else '↓'}"
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
                            "output": output,
                            "metric": metric,
                            "mean": value.mean,
                            "std": value.std,
                            "n_seeds": value.n_seeds,
                            "seed_sd": value.seed_sd,
                        }
                    )
    return rows


def report_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text of :func:`long_rows`; floats in full precision (``repr``), missing as empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: "" if v is None else repr(v) if isinstance(v, float) else v for k, v in row.items()}
        )
    return buffer.getvalue()


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


def report_markdown(
    report: Report, stats: dict, figures: list[str], figure_notes: list[str]
) -> str:
    """The whole report.md: both tables, the failures, superseded runs and the figures."""
    lines = [
        "# Report: " + ", ".join(f"`{d}`" for d in report.sweep_dirs),
        "",
        NUMBERS_LINE,
        "",
        scoring_line(report.runs),
        "",
    ]
    for output in OUTPUTS:
        lines += [f"## {OUTPUT_TITLES[output]}", ""]
        scored = any(key[2] == output for key in stats)
        if report.methods and scored:
            lines += markdown_table(*table_rows(report, stats, output, bold=True))
        elif report.methods:
            lines.append("Not scored in this scoring.")
        else:
            lines.append("No jobs with a known method and setting.")
        lines.append("")
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
    (and mask/data when they vary), points (accel, mean, std over volumes)."""
    panels: dict[str, dict[str, list]] = {}
    for column in report.columns:
        title = " / ".join(
            [f"SR x{column.scale}"]
            + [column.mask] * report.show_mask
            + [column.data] * report.show_data
        )
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
    name = f"qualitative_{column.slug(report.show_data, report.show_mask)}.png"
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


def log_to_wandb(report: Report, stats: dict, out: Path, figures: list[str], project: str) -> Path:
    """Log both tables (as shown), the tidy table and the figures into a new W&B run
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
            header, rows = table_rows(report, stats, output, bold=False)
            payload[f"report/{output}_table"] = wandb.Table(columns=header, data=rows)
        tidy = long_rows(report, stats)
        payload["report/long"] = wandb.Table(
            columns=list(CSV_COLUMNS), data=[[row[c] for c in CSV_COLUMNS] for row in tidy]
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
        help="base name of the tables: NAME.md and NAME.csv (default: report)",
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
) -> dict[str, Any]:
    """Write ``<name>.md``, ``<name>.csv`` and the figures into ``out`` (and the W&B run if
    asked); returns ``{"report", "markdown", "csv", "figures", "wandb_run"}`` paths/objects."""
    from cmfnet.io import write_text_atomic

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"--name {name!r}: expected a plain file name such as 'report'")
    report = load_report(sweep_dirs, scoring)
    out = claim_report_folder(Path(out))
    stats = all_stats(report)
    figures, figure_notes = write_figures(report, stats, out)
    markdown, table = out / f"{name}.md", out / f"{name}.csv"
    write_text_atomic(markdown, report_markdown(report, stats, figures, figure_notes))
    write_text_atomic(table, report_csv(long_rows(report, stats)))
    wandb_run = log_to_wandb(report, stats, out, figures, wandb_project) if use_wandb else None
    return {
        "report": report,
        "markdown": markdown,
        "csv": table,
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
    )
    report = written["report"]
    print(
        f"{len(report.runs)} completed runs, {len(report.failures)} failed jobs "
        f"-> {written['markdown']}, "
        f"{written['csv'].name}, {len(written['figures'])} figures"
    )
    if written["wandb_run"] is not None:
        print(f"W&B run: {written['wandb_run']}")
    return 0
