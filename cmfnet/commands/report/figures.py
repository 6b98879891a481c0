"""The report's figures: PSNR against acceleration, learning curves and qualitative examples."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from cmfnet.commands.report.records import Column, Report


def psnr_panels(
    report: Report, stats: dict
) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """SR PSNR curves for :func:`cmfnet.mri.figures.plot_metric_vs_accel`: one panel per scale
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
    """Learning curves for :func:`cmfnet.mri.figures.plot_learning_curves` from each run's
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
    from cmfnet.mri.figures import plot_qualitative

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
    from cmfnet.mri.figures import plot_learning_curves, plot_metric_vs_accel

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
