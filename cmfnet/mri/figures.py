"""Figures (matplotlib, Agg backend): a metric against acceleration, learning curves, and
qualitative comparisons of slices across methods.

Used by ``cmfnet report`` and by a run's validation examples; the functions take plain numbers
and arrays, not sweep folders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cmfnet.runs.io import atomic_path  # noqa: E402

#: one point of a curve: (acceleration, mean, error-bar half-length)
CurvePoint = tuple[int, float, float]

#: figure resolution of every saved PNG
DPI = 120


def method_colors(methods: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per method, in the given order (tab10, then tab20 for more methods)."""
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    return {method: cmap(i % cmap.N) for i, method in enumerate(methods)}


def _shared_legend(fig: plt.Figure, axes: np.ndarray) -> None:
    """One legend right of the figure with every label of every panel, once, in first-seen order."""
    labels: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labels.setdefault(label, handle)
    fig.legend(
        labels.values(),
        labels.keys(),
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=8,
        frameon=False,
    )


def plot_metric_vs_accel(
    panels: Mapping[str, Mapping[str, Sequence[CurvePoint]]],
    path: Path,
    ylabel: str = "SR PSNR (dB)",
    title: str = "",
) -> Path:
    """Save one panel per entry of ``panels`` (title -> {method -> points}), one line per
    method with error bars, accelerations on a log2 axis.

    Methods keep their colour and marker across panels; lines are nudged sideways a little so
    that error bars of different methods do not hide each other.
    """
    methods = list(dict.fromkeys(m for curves in panels.values() for m in curves))
    colors = method_colors(methods)
    markers = "osD^vP*Xh<>p"
    fig, axes = plt.subplots(
        1, max(1, len(panels)), figsize=(4.6 * max(1, len(panels)), 3.8), squeeze=False, sharey=True
    )
    for ax, (panel_title, curves) in zip(axes[0], panels.items()):
        accels = sorted({p[0] for points in curves.values() for p in points})
        for i, (method, points) in enumerate(curves.items()):
            points = sorted(points)
            nudge = 2.0 ** (0.03 * (i - (len(curves) - 1) / 2))
            ax.errorbar(
                [p[0] * nudge for p in points],
                [p[1] for p in points],
                yerr=[p[2] for p in points],
                label=method,
                color=colors[method],
                marker=markers[methods.index(method) % len(markers)],
                markersize=5,
                capsize=3,
                linewidth=1.4,
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(accels, [f"R{a}" for a in accels])
        ax.minorticks_off()
        ax.set_xlabel("acceleration")
        ax.set_title(panel_title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(ylabel)
    _shared_legend(fig, axes)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_learning_curves(
    panels: Mapping[str, Mapping[str, Sequence[Sequence[tuple[float, float]]]]],
    path: Path,
    ylabel: str = "val SR PSNR (dB)",
    title: str = "",
) -> Path:
    """Save one panel per entry of ``panels`` (title -> {method -> runs}), each run a list of
    (epoch, value) points; a method's runs (seeds) share its colour."""
    methods = list(dict.fromkeys(m for curves in panels.values() for m in curves))
    colors = method_colors(methods)
    columns = min(4, max(1, len(panels)))
    rows = math.ceil(max(1, len(panels)) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False, sharey=True
    )
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (panel_title, curves) in zip(axes.flat, panels.items()):
        for method, runs in curves.items():
            for i, points in enumerate(runs):
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    color=colors[method],
                    linewidth=1.2,
                    alpha=0.9 if i == 0 else 0.5,
                    label=method if i == 0 else None,
                )
        ax.set_xlabel("epoch")
        ax.set_title(panel_title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    _shared_legend(fig, axes)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def slice_scores(target: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of one (H, W) slice against its target, data range = the target
    slice's max (fastMRI's definitions applied to a one-slice volume)."""
    from cmfnet.mri.metrics import psnr, ssim

    return psnr(target[None], output[None]), ssim(target[None], output[None])


def upsample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a (h, w) image to ``shape`` (for showing an LR input at HR size)."""
    from skimage.transform import resize

    return resize(image.astype(np.float64), shape, order=3, mode="edge", anti_aliasing=False)


def _show(
    ax: plt.Axes, image: np.ndarray, title: str, **imshow_kwargs
) -> matplotlib.image.AxesImage:
    shown = ax.imshow(image, **imshow_kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return shown


def _display_range(image: np.ndarray, percentile: float = 99.5) -> tuple[float, float]:
    """Grey-level window of a normalised image: its low and high percentiles."""
    return float(np.percentile(image, 100 - percentile)), float(np.percentile(image, percentile))


@dataclass(frozen=True)
class SliceComparison:
    """One slice to compare: the HR ``target`` (H, W), ``outputs`` as (label, (H, W) image)
    pairs, optionally the normalised LR ``lr_input`` and ``aux_input`` (h, w), and a ``label``
    naming the slice (shown at the left of its rows)."""

    target: np.ndarray
    outputs: Sequence[tuple[str, np.ndarray]]
    lr_input: Optional[np.ndarray] = None
    aux_input: Optional[np.ndarray] = None
    label: str = ""


def plot_comparison(
    slices: Sequence[SliceComparison], path: Path, title: str = "", error_percentile: float = 99.5
) -> Path:
    """Save two rows per slice of ``slices``: the methods' outputs and their error maps.

    Columns: the LR input (if given), one per output, the HR target. Top row: the target and
    each output on the target's grey scale [0, target max], each output with its per-slice
    PSNR/SSIM (:func:`slice_scores`). Bottom row: absolute error maps in units of the target's
    max, one colour scale per slice (0 to the largest ``error_percentile``-th percentile over
    its outputs' errors) with its colour bar under the target; under the LR input, the
    auxiliary LR input (the guide) if given. LR inputs are shown bicubic-upsampled to (H, W)
    with their own grey window. Used for the run's validation examples and the report's
    comparison across methods.
    """
    with_lr = any(s.lr_input is not None for s in slices)
    columns = max(len(s.outputs) for s in slices) + 1 + with_lr
    fig, axes = plt.subplots(
        2 * len(slices),
        columns,
        figsize=(2.3 * columns, 2.6 * 2 * len(slices)),
        squeeze=False,
        layout="constrained",
    )
    for block, comparison in enumerate(slices):
        _draw_comparison(
            comparison, axes[2 * block], axes[2 * block + 1], fig, with_lr, error_percentile
        )
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _draw_comparison(
    comparison: SliceComparison,
    top: np.ndarray,
    bottom: np.ndarray,
    fig: plt.Figure,
    with_lr: bool,
    error_percentile: float,
) -> None:
    """Draw one :class:`SliceComparison` into a row of ``top`` and a row of ``bottom`` axes."""
    target = comparison.target
    vmax = float(target.max()) or 1.0
    errors = [np.abs(output - target) / vmax for _, output in comparison.outputs]
    error_max = max((float(np.percentile(e, error_percentile)) for e in errors), default=0.0) or 1.0
    col = 0
    if with_lr:
        for ax, image, name in (
            (top[0], comparison.lr_input, "LR input (bicubic,\nnormalised)"),
            (bottom[0], comparison.aux_input, "auxiliary LR (guide)"),
        ):
            if image is None:
                ax.axis("off")
                continue
            shown = upsample(image, target.shape)
            low, high = _display_range(shown)
            _show(ax, shown, name, cmap="gray", vmin=low, vmax=high)
        col += 1
    if comparison.label:
        top[0].set_ylabel(comparison.label, fontsize=8)
    error_image = None
    for (label, output), error in zip(comparison.outputs, errors):
        _show(top[col], output, label, cmap="gray", vmin=0, vmax=vmax)
        psnr_db, ssim_value = slice_scores(target, output)
        top[col].text(
            0.03,
            0.03,
            f"{psnr_db:.2f} dB\nSSIM {ssim_value:.4f}",
            transform=top[col].transAxes,
            fontsize=8,
            color="white",
            va="bottom",
            ha="left",
            bbox=dict(facecolor="black", alpha=0.6, pad=2, linewidth=0),
        )
        error_image = _show(
            bottom[col], error, f"|{label} - HR|", cmap="inferno", vmin=0, vmax=error_max
        )
        col += 1
    for unused in range(col, len(top) - 1):
        top[unused].axis("off")
        bottom[unused].axis("off")
    _show(top[-1], target, "HR target", cmap="gray", vmin=0, vmax=vmax)
    bottom[-1].axis("off")
    if error_image is not None:
        bar = fig.colorbar(
            error_image, cax=bottom[-1].inset_axes([0.05, 0.5, 0.9, 0.08]), orientation="horizontal"
        )
        bar.ax.tick_params(labelsize=7)
        bar.set_label("|output - HR| / HR max", fontsize=8)


def plot_qualitative(
    target: np.ndarray,
    outputs: Sequence[tuple[str, np.ndarray]],
    path: Path,
    title: str = "",
    lr_input: Optional[np.ndarray] = None,
    aux_input: Optional[np.ndarray] = None,
    error_percentile: float = 99.5,
) -> Path:
    """Save the 2-row comparison (:func:`plot_comparison`) of one slice across methods."""
    return plot_comparison(
        [SliceComparison(target, outputs, lr_input, aux_input)],
        path,
        title=title,
        error_percentile=error_percentile,
    )


def plot_synthetic_preview(rows: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path) -> Path:
    """One row per (label, auxiliary image, target image) pair of (H, W) magnitudes, each image
    on its own grey scale (0 to its 99.5th percentile)."""
    fig, axes = plt.subplots(len(rows), 2, figsize=(5.2, 2.7 * len(rows)), squeeze=False)
    for row, (label, aux, target) in enumerate(rows):
        for col, (image, name) in enumerate(((aux, "auxiliary (PD)"), (target, "target (T2)"))):
            _show(
                axes[row, col],
                image,
                f"{label}: {name}",
                cmap="gray",
                vmin=0,
                vmax=float(np.percentile(image, 99.5)) or 1.0,
            )
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write the PNG atomically (temporary file in the same folder, then rename) and close."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            fig.savefig(handle, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
