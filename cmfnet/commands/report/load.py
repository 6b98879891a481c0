"""Reading sweep folders into a :class:`~cmfnet.commands.report.records.Report`: each job's
metrics.json, its Hydra overrides (which make a method) and its precision, rescored when asked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

from cmfnet.commands.report.records import (
    IDENTITY_OVERRIDE_KEYS,
    NEUTRAL_OVERRIDE_KEYS,
    PAPER_NAMES,
    UNKNOWN_PRECISION,
    Column,
    Failure,
    Report,
    Run,
)
from cmfnet.mri.metrics import (
    METRIC_KEYS,
)


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
    from cmfnet.sweeps.results import collect_results

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
