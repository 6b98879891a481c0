"""``cmfnet predict``: reconstructions of a data split as fastMRI-style HDF5 files.

``cmfnet predict CHECKPOINT --data DIR [--csv PAIRS.csv] --out OUT`` (or ``--split test`` for the
files the checkpoint's own data config names) writes ``OUT/<target file name>`` per target
volume of the pairing CSV, with

- ``reconstruction``: float32 (slices, H, W), the de-normalised super-resolved output (headline);
- ``reconstruction_lr``: float32 (slices, H/scale, W/scale), the de-normalised rec output;
- every attribute of the target file, plus ``model``, ``model_config`` (JSON), ``scale``,
  ``accel``, ``center_fraction``, ``mask``, ``undersampling`` and ``checkpoint``.

The degradation is the training one, rebuilt from the checkpoint's run config: scale, mask
class, acceleration and centre fraction, clamp, :func:`cmfnet.mri.degrade.degrade_slice` and
:class:`~cmfnet.data.transforms.JointRecSRTransform` with masks seeded by the target's file name.
Predictions of the val/test split therefore equal the outputs ``trainer.test`` scored (up to
float rounding of the batch size; a run tested in bf16 or with ``performance`` switches differs
by that precision, predict runs the plain float32 network). The files are read by the training
reader, :class:`~cmfnet.data.fastmri.FastMRIPairDataset`, with its checks: a bad file fails with
the one-line message it gives in training.

**Files that carry their own undersampling** (the fastMRI test layout: ``kspace`` already zero at
the unsampled phase-encode columns and a ``mask`` dataset of shape (cols,), usually no
reconstruction target) are degraded differently, ``undersampling = "file"``:

1. the k-space is multiplied by the file's mask (a no-op for such files) and the HR image is
   the zero-filled ``centre_crop(ifft2c(kspace), recon size)``;
2. the LR input is ``|ifft2c(centre_crop(fft2c(HR), (H/scale, W/scale)) / scale)|`` and *no new
   mask is drawn*: the undersampling is already in the data.

Why not carry the file's mask over to the LR k-space: the image-domain crop from the encoded
field of view (2x oversampled readout, ``cols`` phase-encode columns) to the recon size
multiplies the image by a box, i.e. convolves k-space with a sinc and resamples it on the
coarser recon grid; when ``cols != W`` an acquired column does not land on one recon-grid
column, so the column pattern has no 1:1 image on the LR grid, and a second mask would
undersample twice. The approximation to keep in mind: the LR crop keeps only the central
~``cols/scale`` encoded columns, where the fully sampled centre block is a larger share, so the
LR input is *less* undersampled than in training (fastMRI knee at 4x, 368 columns, scale 4: about
29 centre + 1/4 of the other ~63 of ~92 columns, an effective ~2x) and its aliasing is
distributed differently. Scores on such inputs are not comparable with the simulated protocol.
The auxiliary contrast must be fully sampled (it is processed as usual; a ``mask`` in it is an
error). Without a target dataset the HR "target" is only a placeholder and nothing is scored.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from cmfnet.commands.evaluate import TARGET_SLICES_ATTR

if TYPE_CHECKING:
    import numpy as np

DEFAULT_TARGET_KEY = "reconstruction_esc"
FASTMRI_DATASET = "cmfnet.data.fastmri.FastMRIPairDataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by run.py")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="DIR", help="folder of fastMRI-layout .h5 volumes")
    source.add_argument(
        "--split",
        metavar="NAME",
        help="the checkpoint's own data split (train, val, test): the folder, "
        "pairing CSV and target key its data config names",
    )
    parser.add_argument(
        "--csv",
        metavar="PAIRS.csv",
        help="pd_file,pdfs_file rows, names with or without .h5 (with --data; default "
        "DIR/<DIR name>_split_less.csv, else DIR/../<DIR name>_split_less.csv)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument(
        "--target-key",
        metavar="KEY",
        help=(
            f"HR target dataset, used when present (default: the split's, or {DEFAULT_TARGET_KEY})"
        ),
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="slices per forward pass (default: the checkpoint's data.eval_batch_size)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        help="where the network runs (default: cuda if available, else cpu)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


# --------------------------------------------------------------------------------------------
# settings from the checkpoint and the command line
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionInputs:
    """Where the volumes come from: the .h5 folder, the pairing CSV and the HR target key."""

    data_dir: Path
    pairs_csv: Path
    target_key: str


def default_pairs_csv(data_dir: Path) -> Path:
    """``DIR/<DIR name>_split_less.csv`` (the CMF-Net release), else
    ``DIR/../<DIR name>_split_less.csv`` (MINet): the candidates of the fastMRI data config
    (ValueError if neither exists)."""
    from cmfnet.data.pairs_csv import find_pairs_csv

    try:
        return find_pairs_csv(None, data_dir)
    except ValueError as err:
        raise ValueError(f"{err} (no --csv given; pass one)") from None


def resolve_inputs(args: argparse.Namespace, config: dict, checkpoint: Path) -> PredictionInputs:
    """The data folder, CSV and target key from ``--data``/``--csv`` or from ``--split``."""
    from cmfnet.data.pairs_csv import find_pairs_csv

    if args.split is not None:
        if args.csv is not None:
            raise ValueError(
                "--csv goes with --data; --split takes the CSV from the checkpoint's data config"
            )
        splits = (config.get("data") or {}).get("splits") or {}
        if args.split not in splits:
            raise ValueError(
                f"--split {args.split}: {checkpoint} has no such data split "
                f"(it has {sorted(splits)})"
            )
        split = splits[args.split]
        if split.get("_target_") != FASTMRI_DATASET:
            raise ValueError(
                f"--split {args.split}: the checkpoint's split is a {split.get('_target_')}, not a "
                "fastMRI-layout split; pass --data DIR --csv PAIRS.csv"
            )
        target_key = args.target_key or split.get("target_key", DEFAULT_TARGET_KEY)
        root = Path(split["root"])
        return PredictionInputs(root, find_pairs_csv(split.get("pairs_csv"), root), target_key)
    data_dir = Path(args.data)
    if not data_dir.is_dir():
        raise ValueError(f"--data {data_dir}: folder not found")
    pairs_csv = Path(args.csv) if args.csv is not None else default_pairs_csv(data_dir)
    if not pairs_csv.is_file():
        raise ValueError(f"{pairs_csv}: pairing CSV not found")
    return PredictionInputs(data_dir, pairs_csv, args.target_key or DEFAULT_TARGET_KEY)


@dataclass(frozen=True)
class Degradation:
    """The training degradation of a checkpoint's run config."""

    scale: int
    accel: float
    center_fraction: Optional[float]
    mask_cfg: dict
    clamp: Optional[float]
    #: the SR output is de-normalised with this times the input's mean and std: 1 for cmfnet's
    #: training; ``scale`` for a network of the CMF-Net release (``cmfnet import-release``),
    #: whose LR inputs, and with them its SR target's statistics, are ``scale`` times brighter
    sr_stats_gain: float = 1.0


def degradation_from_config(config: dict, checkpoint: Path) -> Degradation:
    """Scale, acceleration, mask config and clamp of a run config (CheckpointError if absent)."""
    from cmfnet.runs.checkpoint import CheckpointError, check_trusted_target, config_value

    mask_cfg = config_value(config, "mask", checkpoint)
    if not isinstance(mask_cfg, dict) or "_target_" not in mask_cfg:
        raise CheckpointError(
            f"{checkpoint}: cmfnet_config['mask'] is not a mask config with a '_target_'"
        )
    check_trusted_target(mask_cfg, "mask", "cmfnet.mri.masks", object, checkpoint)
    gain = (config.get("data") or {}).get("sr_stats_gain", 1.0)
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not gain > 0:
        raise CheckpointError(
            f"{checkpoint}: cmfnet_config['data']['sr_stats_gain'] must be a number > 0, "
            f"got {gain!r}"
        )
    return Degradation(
        scale=int(config_value(config, "scale", checkpoint)),
        accel=config_value(config, "accel", checkpoint),
        center_fraction=config.get("center_fraction"),
        mask_cfg=mask_cfg,
        clamp=(config.get("data") or {}).get("clamp"),
        sr_stats_gain=float(gain),
    )


def build_mask_func(degradation: Degradation, checkpoint: Path):
    """Instantiate the checkpoint's mask function; a one-line error naming the file if it fails."""
    import hydra.utils

    from cmfnet.runs.checkpoint import CheckpointError
    from cmfnet.runs.errors import one_line

    try:
        return hydra.utils.instantiate(degradation.mask_cfg)
    except Exception as err:
        raise CheckpointError(
            f"{checkpoint}: cannot build the mask "
            f"{degradation.mask_cfg['_target_']}: {one_line(err)}"
        ) from err


def pick_device(requested: Optional[str]) -> str:
    """``cuda`` if requested (and present) or available, else ``cpu``."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


# --------------------------------------------------------------------------------------------
# the prediction dataset
# --------------------------------------------------------------------------------------------


class KeepAllColumns:
    """Mask function keeping every column, for k-space that is already undersampled.

    Same call contract as :mod:`cmfnet.mri.masks`: ``(shape, offset, seed) -> (mask, num_low)``
    with ``mask`` of shape ``[1, ..., cols, 1]`` (columns at axis -2).
    """

    def __call__(self, shape, offset=None, seed=None):
        import torch

        mask_shape = [1] * len(shape)
        mask_shape[-2] = shape[-2]
        return torch.ones(mask_shape, dtype=torch.float32), shape[-2]


def build_dataset(inputs: PredictionInputs, degradation: Degradation, mask_func):
    """The training dataset over ``inputs`` with the checkpoint's degradation, in fastMRI's test
    layout too: targets with their own ``mask`` get no new one (see the module docstring)."""
    from cmfnet.data.fastmri import FastMRIPairDataset
    from cmfnet.data.transforms import JointRecSRTransform

    return FastMRIPairDataset(
        inputs.data_dir,
        inputs.pairs_csv,
        degradation.scale,
        JointRecSRTransform(mask_func, seed_masks_by_name=True, clamp=degradation.clamp),
        inputs.target_key,
        cache_lowres=False,
        undersampled_transform=JointRecSRTransform(
            KeepAllColumns(), seed_masks_by_name=True, clamp=degradation.clamp
        ),
    )


# --------------------------------------------------------------------------------------------
# inference and output files
# --------------------------------------------------------------------------------------------


def write_prediction(path: Path, source: Path, sr, rec, attrs: dict) -> None:
    """Atomically write one output volume: ``reconstruction`` (slices, H, W) = ``sr``,
    ``reconstruction_lr`` (slices, h, w) = ``rec``, the source file's attrs plus ``attrs``."""
    import h5py

    from cmfnet.runs.io import atomic_path

    with atomic_path(path) as tmp, h5py.File(source, "r") as src, h5py.File(tmp, "w") as out:
        for key, value in src.attrs.items():
            out.attrs[key] = value
        for key, value in attrs.items():
            out.attrs[key] = value
        out.create_dataset("reconstruction", data=sr)
        out.create_dataset("reconstruction_lr", data=rec)


def output_attrs(config: dict, degradation: Degradation, checkpoint: Path) -> dict:
    """Attributes that say how a prediction was made."""
    return {
        "model": config["model"]["_target_"],
        "model_config": json.dumps(config["model"], sort_keys=True),
        "scale": degradation.scale,
        "accel": degradation.accel,
        "center_fraction": degradation.center_fraction
        if degradation.center_fraction is not None
        else "",
        "mask": degradation.mask_cfg["_target_"],
        "sr_stats_gain": degradation.sr_stats_gain,
        "checkpoint": str(checkpoint.resolve()),
    }


def predict_dataset(
    model,
    dataset,
    out_dir: Path,
    attrs: dict,
    batch_size: int,
    device: str,
    progress: bool = True,
    sr_stats_gain: float = 1.0,
) -> list[Path]:
    """Run ``model`` over every slice of ``dataset`` (a
    :class:`~cmfnet.data.fastmri.FastMRIPairDataset`) and write one file per target volume.

    Outputs are de-normalised like the LightningModule's test step (``x * std + mean``); the SR
    output with ``sr_stats_gain`` times the statistics (:class:`Degradation`).
    A volume's file is written as soon as all its slices are done. Returns the written paths.
    """
    from collections import Counter

    import numpy as np
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from cmfnet.lit.datamodule import collate_samples

    expected = Counter(dataset.target_name(pair_idx) for pair_idx, _ in dataset.slices)
    targets = {target.path.name: target for _, target in dataset.pairs}
    pending: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    written = []
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_samples)
    with (
        torch.inference_mode(),
        tqdm(total=len(dataset), desc="predict", unit="slice", disable=not progress) as bar,
    ):
        for batch in loader:
            rec, sr = model(batch.target_input.to(device), batch.aux_input.to(device))
            mean = batch.mean.view(-1, 1, 1, 1).to(device)
            std = batch.std.view(-1, 1, 1, 1).to(device)
            sr = ((sr * std + mean) * sr_stats_gain).float().squeeze(1).cpu().numpy()
            rec = (rec * std + mean).float().squeeze(1).cpu().numpy()
            for i, (name, slice_idx) in enumerate(zip(batch.fname, batch.slice_idx)):
                slices = pending.setdefault(name, {})
                slices[slice_idx] = (sr[i], rec[i])
                if len(slices) == expected[name]:
                    order = sorted(slices)
                    volume = targets[name]
                    undersampling = "simulated" if volume.column_mask is None else "file"
                    path = out_dir / name
                    write_prediction(
                        path,
                        volume.path,
                        np.stack([slices[s][0] for s in order]).astype(np.float32),
                        np.stack([slices[s][1] for s in order]).astype(np.float32),
                        {
                            **attrs,
                            "undersampling": undersampling,
                            # the target's slices these are (a pair covers the shorter volume)
                            TARGET_SLICES_ATTR: np.asarray(order, dtype=np.int64),
                        },
                    )
                    written.append(path)
                    del pending[name]
            bar.update(len(batch.fname))
    return written


def run(args: argparse.Namespace) -> int:
    from cmfnet.runs.checkpoint import build_model_from_checkpoint
    from cmfnet.runs.ownership import claim_folder

    checkpoint = Path(args.checkpoint)
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = pick_device(args.device)
    model, config = build_model_from_checkpoint(checkpoint)
    degradation = degradation_from_config(config, checkpoint)
    inputs = resolve_inputs(args, config, checkpoint)
    out_dir = Path(args.out)
    if out_dir.resolve() == inputs.data_dir.resolve():
        raise ValueError(
            f"--out {out_dir}: is the data folder; predictions would overwrite the inputs"
        )
    dataset = build_dataset(inputs, degradation, build_mask_func(degradation, checkpoint))
    if args.target_key and all(target.target_key is None for _, target in dataset.pairs):
        raise ValueError(
            f"--target-key {args.target_key}: no target file has that dataset "
            f"(e.g. {dataset.pairs[0][1].path})"
        )
    data_cfg = config.get("data") or {}
    batch_size = args.batch_size or int(
        data_cfg.get("eval_batch_size") or data_cfg.get("batch_size") or 8
    )
    claim_folder(out_dir, "predictions", setting="--out")
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".predicting-"))
    try:  # all volumes or none: a failure part-way leaves --out as it was
        staged = predict_dataset(
            model,
            dataset,
            staging,
            output_attrs(config, degradation, checkpoint),
            batch_size,
            device,
            progress=not args.quiet,
            sr_stats_gain=degradation.sr_stats_gain,
        )
        written = [out_dir / path.name for path in staged]
        for path, final in zip(staged, written):
            os.replace(path, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not args.quiet:
        print(f"wrote {len(written)} volumes ({len(dataset)} slices) to {out_dir}")
    return 0
