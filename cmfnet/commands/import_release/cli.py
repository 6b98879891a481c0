"""``cmfnet import-release``: its options, and writing the imported checkpoint with its record."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cmfnet.commands.import_release.layout import ReleaseImportError
from cmfnet.commands.import_release.settings import (
    RELEASE_ACCEL,
    RELEASE_CENTER_FRACTION,
    RELEASE_CLAMP,
    RELEASE_MASKS,
    RELEASE_SEED,
    cmfnet_config,
    data_settings,
)
from cmfnet.commands.import_release.weights import (
    RELEASE_PREFIX,
    hyperparameters,
    load_release_checkpoint,
    map_state_dict,
    release_model_config,
    strip_prefix,
)

WRITTEN_BY = "cmfnet import-release"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", metavar="CKPT", help="a checkpoint of the CMF-Net authors' release"
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (new, empty, or one import-release made): "
        "checkpoints/imported.ckpt and imported.json",
    )
    parser.add_argument(
        "--scale",
        type=int,
        help="SR factor; read from the SR tail's shapes, so this only checks it",
    )
    parser.add_argument(
        "--accel",
        type=int,
        help="acceleration of the mask (default: the checkpoint's, else the release's "
        f"{RELEASE_ACCEL})",
    )
    parser.add_argument(
        "--center-fraction",
        type=float,
        help="fully sampled centre fraction (default: the checkpoint's, else the release's "
        f"{RELEASE_CENTER_FRACTION})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help=f"seed of the masks (default: the checkpoint's, else the release's {RELEASE_SEED})",
    )
    parser.add_argument(
        "--mask",
        choices=sorted(RELEASE_MASKS),
        help="mask type (default: the checkpoint's mask_type, else random)",
    )
    parser.add_argument(
        "--clamp",
        type=float,
        help=f"inputs clamped to +-CLAMP once normalised (default: the release's {RELEASE_CLAMP})",
    )
    parser.add_argument(
        "--sr-stats-gain",
        type=float,
        help="the SR output is de-normalised with this times the input's mean and std "
        "(default: the scale: the release's LR inputs are scale times brighter than ours)",
    )
    parser.add_argument(
        "--prefix",
        help="prefix of the network's tensors in the state dict (default: found; the release's "
        f"is {RELEASE_PREFIX!r})",
    )
    parser.add_argument("--quiet", action="store_true", help="no summary line")


def import_release(args: argparse.Namespace) -> tuple[Path, dict]:
    """Write ``DIR/checkpoints/imported.ckpt`` and ``DIR/imported.json``; returns the
    checkpoint's path and the record written to ``imported.json``."""
    import torch

    from cmfnet.models import build_model
    from cmfnet.runs.io import atomic_path, write_text_atomic
    from cmfnet.runs.ownership import claim_folder

    source = Path(args.checkpoint)
    checkpoint = load_release_checkpoint(source)
    state, prefix = strip_prefix(checkpoint["state_dict"], args.prefix, source)
    model_cfg = release_model_config(state, source)
    if args.scale is not None and args.scale != model_cfg["scale"]:
        raise ReleaseImportError(
            f"--scale {args.scale}: {source} is a x{model_cfg['scale']} network "
            f"(its SR tail has {model_cfg['scale'].bit_length() - 1} upsampling stages)"
        )
    model = build_model(model_cfg)
    weights, dropped = map_state_dict(state, model, source)
    model.load_state_dict(weights, strict=True)
    settings, sources = data_settings(args, hyperparameters(checkpoint), model_cfg["scale"])

    out = claim_folder(Path(args.out), "imported", setting="--out")
    target = out / "checkpoints" / "imported.ckpt"
    config = cmfnet_config(model_cfg, settings, source.resolve())
    with atomic_path(target) as tmp:
        torch.save(
            {
                "epoch": checkpoint.get("epoch"),
                "global_step": checkpoint.get("global_step"),
                "state_dict": {f"model.{name}": t for name, t in model.state_dict().items()},
                "cmfnet_config": config,
            },
            tmp,
        )
    record = {
        "written_by": WRITTEN_BY,
        "source": str(source.resolve()),
        "prefix": prefix,
        "epoch": checkpoint.get("epoch"),
        "checkpoint": str(target),
        "tensors_mapped": len(weights),
        "parameters": sum(t.numel() for t in model.parameters()),
        "tensors_dropped": dropped,
        "settings": {key: {"value": settings[key], "from": sources[key]} for key in settings},
        "notes": [
            "LR sides that are not a multiple of 4: the release's U-Nets pad on the right/bottom, "
            "ours symmetrically, so outputs differ near the borders there",
            "masks are cmfnet's, seeded by file name; the release seeded validation masks by path",
        ],
    }
    write_text_atomic(out / "imported.json", json.dumps(record, indent=2) + "\n")
    return target, record


def run(args: argparse.Namespace) -> int:
    target, record = import_release(args)
    if not args.quiet:
        print(
            f"wrote {target}: {record['tensors_mapped']} tensors mapped, "
            f"{len(record['tensors_dropped'])} unused release tensors dropped "
            f"(listed in {Path(args.out) / 'imported.json'})"
        )
    return 0
