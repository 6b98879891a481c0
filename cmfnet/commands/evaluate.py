"""``cmfnet evaluate``: fastMRI metrics of prediction files against target files.

``cmfnet evaluate --target DIR --predictions DIR`` mirrors fastMRI 0.3.0's ``evaluate.py``:
for every target volume ``DIR/<name>.h5`` it reads ``target[--target-key]`` and
``prediction[--prediction-key]`` from ``PREDICTIONS/<name>.h5``, centre-crops *both* to a square
of the target's width, ``(W, W)``, and computes NMSE, PSNR and SSIM on the whole volume with the
data range ``maxval = target volume max`` (after the crop; the ``max`` attribute is not used),
SSIM averaged over slices. Mean and standard deviation are taken over volumes; the std is the
sample std (``ddof=1``) of fastMRI's ``runstats.Statistics`` (fastMRI prints ``2 * std``; we
print and store the std itself). A single volume has no std (``null`` in the JSON).

Differences from fastMRI's script, none of which changes a number it computes:
results are also given per acquisition (the target file's ``acquisition`` attribute);
only ``*.h5`` files of the target folder are volumes; ``--acquisition`` is checked before the
prediction is opened; ``--only-predicted`` skips targets without a prediction (for folders that
also hold the auxiliary contrast or volumes outside the pairing CSV) instead of failing; a
prediction written by ``cmfnet predict`` says which of the target's slices it holds
(``target_slices``: a PD/PD-FS pair covers the shorter volume) and is scored against those.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

METRICS = ("nmse", "psnr", "ssim")
OVERALL = "all"
UNKNOWN_ACQUISITION = "unknown"
EVALUATE_WRITER = "cmfnet evaluate"  # marks its JSON, which only a later evaluate may replace
#: attribute of a ``cmfnet predict`` file: the indices of the target's slices it holds, in order
#: (a pair covers only the shorter of its two volumes); those slices of the target are scored
TARGET_SLICES_ATTR = "target_slices"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", required=True, metavar="DIR", help="folder of target .h5 volumes"
    )
    parser.add_argument(
        "--predictions",
        required=True,
        metavar="DIR",
        help="folder of prediction .h5 files named like the targets",
    )
    parser.add_argument(
        "--target-key",
        default="reconstruction_esc",
        metavar="KEY",
        help="target dataset (reconstruction_esc)",
    )
    parser.add_argument(
        "--prediction-key",
        default="reconstruction",
        metavar="KEY",
        help="prediction dataset (reconstruction; reconstruction_lr is not comparable "
        "with an HR target)",
    )
    parser.add_argument(
        "--acquisition",
        metavar="NAME",
        help="score only targets with this 'acquisition' attribute (e.g. CORPDFS_FBK)",
    )
    parser.add_argument(
        "--only-predicted",
        action="store_true",
        help="skip targets that have no prediction file instead of failing",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the numbers to this JSON file")


@dataclass(frozen=True)
class VolumeScore:
    """Metrics of one volume."""

    name: str
    acquisition: str
    nmse: float
    psnr: float
    ssim: float


def _open(path: Path, role: str):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: {role} is not a readable HDF5 file ({err})") from err


def _read(hf, key: str, path: Path, role: str):
    """The float volume ``hf[key]`` (slices, H, W), checked."""
    import numpy as np

    if key not in hf:
        raise ValueError(f"{path}: {role} has no dataset '{key}' (has {sorted(hf)})")
    data = hf[key][()]
    if data.ndim != 3 or not np.issubdtype(data.dtype, np.floating):
        raise ValueError(
            f"{path}: {role} '{key}' must be a float volume (slices, H, W), "
            f"got {data.dtype} {data.shape}"
        )
    return data


def target_slices(target, held, prediction_path: Path, target_path: Path):
    """The slices of ``target`` (slices, H, W) that a prediction holds (``held``: indices, as
    ``cmfnet predict`` records them; a pair covers only the shorter of its two volumes)."""
    if held.ndim != 1 or not len(held) or held.min() < 0 or held.max() >= target.shape[0]:
        raise ValueError(
            f"{prediction_path}: its {TARGET_SLICES_ATTR} {held.tolist()} are not slices of "
            f"{target_path} ({target.shape[0]} slices)"
        )
    return target[held]


def score_volume(
    target_path: Path, prediction_path: Path, target_key: str, prediction_key: str
) -> VolumeScore:
    """fastMRI's metrics of one prediction file against its target file."""
    import numpy as np

    from cmfnet.mri.kspace import center_crop
    from cmfnet.mri.metrics import nmse, psnr, ssim

    with _open(target_path, "target") as hf:
        target = _read(hf, target_key, target_path, "target")
        acquisition = str(hf.attrs.get("acquisition", UNKNOWN_ACQUISITION))
    with _open(prediction_path, "prediction") as hf:
        prediction = _read(hf, prediction_key, prediction_path, "prediction")
        held = hf.attrs.get(TARGET_SLICES_ATTR)
    if held is not None:  # cmfnet predict's output: the target's slices it holds
        target = target_slices(target, np.asarray(held), prediction_path, target_path)
    crop = (target.shape[-1], target.shape[-1])
    try:
        target = center_crop(target, crop)
        prediction = center_crop(prediction, crop)
    except ValueError as err:
        raise ValueError(
            f"{prediction_path}: cannot compare prediction {prediction.shape} "
            f"with target {target.shape} "
            f"after fastMRI's centre crop to {crop} ({err})"
        ) from err
    if prediction.shape != target.shape:
        raise ValueError(
            f"{prediction_path}: prediction {prediction.shape} and target {target.shape} "
            "differ in shape "
            f"after fastMRI's centre crop to {crop}"
        )
    if not np.isfinite(prediction).all():
        raise ValueError(f"{prediction_path}: prediction '{prediction_key}' holds NaN or inf")
    try:
        return VolumeScore(
            name=target_path.name,
            acquisition=acquisition,
            nmse=nmse(target, prediction),
            psnr=psnr(target, prediction),
            ssim=ssim(target, prediction),
        )
    except ValueError as err:  # a target with NaN/inf or no data range
        raise ValueError(f"{prediction_path} against {target_path}: {err}") from None


def _acquisition_of(path: Path) -> str:
    with _open(path, "target") as hf:
        return str(hf.attrs.get("acquisition", UNKNOWN_ACQUISITION))


def select_volumes(
    target_dir: Path, prediction_dir: Path, acquisition: Optional[str], only_predicted: bool
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(target, prediction) paths to score, and the targets skipped for lack of a prediction."""
    if not target_dir.is_dir():
        raise ValueError(f"--target {target_dir}: folder not found")
    if not prediction_dir.is_dir():
        raise ValueError(f"--predictions {prediction_dir}: folder not found")
    selected, skipped = [], []
    for target_path in sorted(target_dir.glob("*.h5")):
        if acquisition is not None and _acquisition_of(target_path) != acquisition:
            continue
        prediction_path = prediction_dir / target_path.name
        if prediction_path.is_file():
            selected.append((target_path, prediction_path))
        elif only_predicted:
            skipped.append(target_path)
        else:
            raise ValueError(
                f"{target_path}: no prediction {prediction_path} "
                "(select targets with --acquisition, "
                "or pass --only-predicted to skip targets without one)"
            )
    if not selected:
        which = f" with acquisition {acquisition}" if acquisition is not None else ""
        raise ValueError(
            f"--target {target_dir}: no target .h5 volume{which} "
            f"has a prediction in {prediction_dir}"
        )
    return selected, skipped


def summarize(scores: list[VolumeScore]) -> dict:
    """``{metric: mean, metric_std: sample std or None, volumes: n}`` over ``scores``."""
    import numpy as np

    summary: dict = {"volumes": len(scores)}
    for metric in METRICS:
        values = np.array([getattr(s, metric) for s in scores], dtype=np.float64)
        summary[metric] = float(values.mean())
        summary[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
    return summary


def group_summaries(scores: list[VolumeScore]) -> dict[str, dict]:
    """Summaries per acquisition (sorted) and over all volumes (key ``all``)."""
    acquisitions = sorted({s.acquisition for s in scores})
    groups = {acq: summarize([s for s in scores if s.acquisition == acq]) for acq in acquisitions}
    groups[OVERALL] = summarize(scores)
    return groups


def format_table(groups: dict[str, dict]) -> str:
    """Plain-text table: one row per acquisition and one for all volumes, mean ± std."""

    def cell(summary: dict, metric: str) -> str:
        std = summary[f"{metric}_std"]
        return f"{summary[metric]:.4g}" + (
            "" if std is None or math.isnan(std) else f" ± {std:.2g}"
        )

    header = ["acquisition", "volumes", "NMSE", "PSNR", "SSIM"]
    rows = [[name, str(s["volumes"])] + [cell(s, m) for m in METRICS] for name, s in groups.items()]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = [
        "  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip()
        for row in [header] + rows
    ]
    return "\n".join(lines)


def evaluate_folders(
    target_dir: Path,
    prediction_dir: Path,
    target_key: str = "reconstruction_esc",
    prediction_key: str = "reconstruction",
    acquisition: Optional[str] = None,
    only_predicted: bool = False,
) -> dict:
    """Score every selected volume; returns the JSON-ready result (see :func:`run`)."""
    pairs, skipped = select_volumes(target_dir, prediction_dir, acquisition, only_predicted)
    scores = [score_volume(t, p, target_key, prediction_key) for t, p in pairs]
    return {
        "target_dir": str(target_dir),
        "predictions_dir": str(prediction_dir),
        "target_key": target_key,
        "prediction_key": prediction_key,
        "acquisition": acquisition,
        "skipped_without_prediction": [p.name for p in skipped],
        "per_volume": {
            s.name: {"acquisition": s.acquisition, **{m: getattr(s, m) for m in METRICS}}
            for s in scores
        },
        "groups": group_summaries(scores),
    }


def run(args: argparse.Namespace) -> int:
    from cmfnet.runs.io import check_writable_file, write_json_atomic

    if args.json:
        check_writable_file(Path(args.json), f"--json {args.json}", written_by=EVALUATE_WRITER)
    result = evaluate_folders(
        Path(args.target),
        Path(args.predictions),
        args.target_key,
        args.prediction_key,
        args.acquisition,
        args.only_predicted,
    )
    print(format_table(result["groups"]))
    if result["skipped_without_prediction"]:
        print(
            f"skipped {len(result['skipped_without_prediction'])} "
            "target volumes without a prediction"
        )
    if args.json:
        write_json_atomic(Path(args.json), {**result, "written_by": EVALUATE_WRITER})
    return 0
