"""What a report is made of: the runs read from sweep folders, their table columns, failures and
per-cell statistics, and the fixed choices (the paper's method names and order, the reference,
the bootstrap settings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from cmfnet.runs.settings import RUN_IDENTITY

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


#: override keys that place a run in a table cell or mark it as a seed: its identity and the
#: trainer's precision
IDENTITY_OVERRIDE_KEYS = (*RUN_IDENTITY, "trainer.precision")


#: the fields of a table column (:class:`Column`) that the report's CSV files write per row
CELL_FIELDS = ("scale", "accel", "data", "mask", "scoring", "precision")
#: the columns of the report's CSV files that say which cell, output and metric a row is of
SETTING_COLUMNS = (*CELL_FIELDS, "output", "metric")


#: what runs of one table share (:attr:`Column.regime`): runs differing in any are in separate
#: tables
REGIME_FIELDS = ("data", "scoring", "precision")


#: a run's precision when neither its metrics.json nor its config.yaml records one
UNKNOWN_PRECISION = "unknown"


#: the metrics the paired comparisons test
COMPARED_METRICS = ("psnr", "ssim")


#: default reference of the paired comparisons (a model config: CMF-Net), bootstrap resamples
#: and seed
REFERENCE = "cmfnet"


RESAMPLES = 10_000


BOOTSTRAP_SEED = 0


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

    def variant_of(self, method: str) -> str:
        """What makes ``method`` a variant of its model's method: the overrides its sweep varies
        besides the model (``" [optimizer.lr=0.001]"`` of ``"CMF-Net [optimizer.lr=0.001]"``),
        or ``""``."""
        model = self.method_models[method]
        base = PAPER_NAMES.get(model, model)
        return method[len(base) :] if method.startswith(f"{base} [") else ""

    def has_method(self, name: str) -> bool:
        """Whether ``name`` is a method here, as such or with the overrides of a variant."""
        return any(m == name or m == name + self.variant_of(m) for m in self.methods)

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


def setting_fields(column: Column, output: str, metric: str) -> dict[str, Any]:
    """The :data:`SETTING_COLUMNS` of a CSV row about ``column``, ``output`` and ``metric``."""
    return {
        **{field: getattr(column, field) for field in CELL_FIELDS},
        "output": output,
        "metric": metric,
    }
