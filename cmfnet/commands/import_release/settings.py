"""The data settings of an imported release (acceleration, centre fraction, mask, seed, clamp) from
the command line or the checkpoint's hyperparameters, and the run config predict reads.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cmfnet.commands.import_release.layout import ReleaseImportError

#: the release's data settings (``experimental/CMFNet/train.py``, ``fastmri/data/transforms.py``)
RELEASE_ACCEL = 6


RELEASE_CENTER_FRACTION = 0.08


RELEASE_SEED = 42


RELEASE_CLAMP = 6.0


RELEASE_MASKS = {
    "random": "cmfnet.mri.masks.RandomMaskFunc",
    "equispaced": "cmfnet.mri.masks.EquispacedMaskFunc",
}


def _single(hparams: dict, key: str) -> Any:
    """One value of a release hyperparameter list (``accelerations: [6]``), or None."""
    value = hparams.get(key)
    if isinstance(value, (list, tuple)):
        return value[0] if len(value) == 1 else None
    return value


def data_settings(args: argparse.Namespace, hparams: dict, scale: int) -> tuple[dict, dict]:
    """``(settings, where each came from)``: an option, else the checkpoint's hyperparameters,
    else the release's default."""
    defaults = {
        "accel": RELEASE_ACCEL,
        "center_fraction": RELEASE_CENTER_FRACTION,
        "seed": RELEASE_SEED,
        "mask": "random",
        "clamp": RELEASE_CLAMP,
        "sr_stats_gain": float(scale),
    }
    recorded = {
        "accel": _single(hparams, "accelerations"),
        "center_fraction": _single(hparams, "center_fractions"),
        "seed": hparams.get("seed"),
        "mask": hparams.get("mask_type"),
    }
    given = {
        "accel": args.accel,
        "center_fraction": args.center_fraction,
        "seed": args.seed,
        "mask": args.mask,
        "clamp": args.clamp,
        "sr_stats_gain": args.sr_stats_gain,
    }
    settings, sources = {}, {}
    for key, default in defaults.items():
        for source, value in (
            ("option", given.get(key)),
            ("checkpoint", recorded.get(key)),
            ("release default", default),
        ):
            if value is not None:
                settings[key], sources[key] = value, source
                break
    if settings["mask"] not in RELEASE_MASKS:
        raise ReleaseImportError(
            f"mask type {settings['mask']!r} ({sources['mask']}) is not one of "
            f"{sorted(RELEASE_MASKS)}"
        )
    for key in ("accel", "center_fraction", "clamp", "sr_stats_gain"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ReleaseImportError(f"{key} ({sources[key]}) must be a number > 0, got {value!r}")
    if not settings["center_fraction"] < 1:
        raise ReleaseImportError(
            f"center_fraction ({sources['center_fraction']}) must be < 1, got "
            f"{settings['center_fraction']}"
        )
    return settings, sources


def cmfnet_config(model_cfg: dict, settings: dict, source: Path) -> dict:
    """The run config predict reads: model, scale, mask and data settings."""
    return {
        "model": model_cfg,
        "scale": model_cfg["scale"],
        "accel": settings["accel"],
        "center_fraction": settings["center_fraction"],
        "seed": settings["seed"],
        "mask": {
            "_target_": RELEASE_MASKS[settings["mask"]],
            "center_fractions": [settings["center_fraction"]],
            "accelerations": [settings["accel"]],
            "seed": settings["seed"],
        },
        "data": {
            "clamp": float(settings["clamp"]),
            "sr_stats_gain": float(settings["sr_stats_gain"]),
            "batch_size": 8,
            "eval_batch_size": 8,
        },
        "imported_from": str(source),
    }
