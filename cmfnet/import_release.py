"""``cmfnet import-release CKPT --out DIR``: a checkpoint of the CMF-Net authors' release as a
cmfnet checkpoint that ``cmfnet predict`` and ``cmfnet evaluate`` take.

The release (``abelucky/CMF_NET``, PyTorch Lightning 0.8.1) trains its network, class ``net`` of
``fastmri/models/network.py``, as the attribute ``Net`` of its LightningModule, so its checkpoint
holds ``state_dict`` entries ``Net.<release name>``. Every release name is renamed to ours
(:func:`release_name` gives the release name of each of our tensors) and its shape checked; the
release's two kinds of unused modules (:func:`unused_release_tensors`: the second SR tail
``tail1`` and the MMF conv ``bf<i>.conv3``, never called in its forward) are dropped, named in
``imported.json``. A tensor that is missing, unexpected or of another shape is refused, naming
it. Widths and the scale are read from the tensors' shapes; the counts of blocks are the
release's (3 fusion levels, 6 branch steps, 2 U-Net poolings, MFA kernels 1/3/5, residual
scaling 0.1), fixed in its code.

The checkpoint is read with ``torch.load(weights_only=True)``. Lightning may have pickled the
hyperparameters as objects; only these are rebuilt, each as plain data: ``argparse.Namespace``,
Lightning's ``AttributeDict`` (as a dict) and ``pathlib`` paths (as strings). Any other pickled
object is refused without being unpickled (:func:`load_release_checkpoint`).

Intensities: the release's LR images are ``scale`` times brighter than ours (it does not divide
the cropped k-space by the scale) and its SR target is normalised with that LR input's mean and
std, so its SR output must be de-normalised with ``scale`` times our statistics to come out in
the target's units. The imported config says so (``data.sr_stats_gain``, read by predict).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Optional

#: the release's fixed architecture (``fastmri/models/network.py``, class ``net``)
RELEASE_FUSION_LEVELS = 3
RELEASE_BRANCH_STEPS = 6
RELEASE_UNET_POOLS = 2
RELEASE_MFA_KERNELS = (1, 3, 5)
RELEASE_RES_SCALE = 0.1
#: the release's data settings (``experimental/CMFNet/train.py``, ``fastmri/data/transforms.py``)
RELEASE_ACCEL = 6
RELEASE_CENTER_FRACTION = 0.08
RELEASE_SEED = 42
RELEASE_CLAMP = 6.0
RELEASE_MASKS = {
    "random": "cmfnet.masks.RandomMaskFunc",
    "equispaced": "cmfnet.masks.EquispacedMaskFunc",
}
#: the LightningModule attribute holding the network in the release (``self.Net = net()``)
RELEASE_PREFIX = "Net."
#: where Lightning versions keep the hyperparameters
HPARAMS_KEYS = ("hyper_parameters", "hparams", "module_arguments")
#: release tensors our network has no counterpart for, and why
UNUSED_REASONS = {
    "tail1": "the release's second SR tail, built but never called in its forward",
    "conv3": "an MMF conv the release builds but never calls in its forward",
}
WRITTEN_BY = "cmfnet import-release"


class ReleaseImportError(ValueError):
    """A release checkpoint that cannot be imported; the message names the file and tensor."""


# --------------------------------------------------------------------------------------------
# the name map
# --------------------------------------------------------------------------------------------


def _conv_block_index(index: str) -> str:
    """Our U-Net conv block's conv (0, 3) -> the release ConvBlock's (``layers.0``, ``layers.4``:
    its blocks also hold a Dropout2d after each LeakyReLU)."""
    return {"0": "layers.0", "3": "layers.4"}[index]


def release_name(ours: str, pools: int = RELEASE_UNET_POOLS) -> str:
    """The release's name of our CMFNet tensor ``ours`` (KeyError if it has none)."""
    rules = [
        (r"head_target\.(.+)", lambda m: f"head2.{m[1]}"),
        (r"head_aux\.(.+)", lambda m: f"head1.{m[1]}"),
        (r"target_blocks\.(\d+)\.(.+)", lambda m: f"ResBlock2{int(m[1]) + 1}.{m[2]}"),
        (r"aux_blocks\.(\d+)\.(.+)", lambda m: f"ResBlock1{int(m[1]) + 1}.{m[2]}"),
        (
            r"fusions\.(\d+)\.aux_convs\.(\d+)\.(.+)",
            lambda m: f"mf{int(m[1]) + 1}.conv{int(m[2]) + 1}.{m[3]}",
        ),
        (r"fusions\.(\d+)\.project\.(.+)", lambda m: f"mf{int(m[1]) + 1}.conv.{m[2]}"),
        (
            r"rec_blocks\.(\d+)\.down_blocks\.(\d+)\.([03])\.(.+)",
            lambda m: (
                f"unet{int(m[1]) + 1}.down_sample_layers.{m[2]}.{_conv_block_index(m[3])}.{m[4]}"
            ),
        ),
        (
            r"rec_blocks\.(\d+)\.bottleneck\.([03])\.(.+)",
            lambda m: f"unet{int(m[1]) + 1}.conv.{_conv_block_index(m[2])}.{m[3]}",
        ),
        (
            r"rec_blocks\.(\d+)\.up_samplers\.(\d+)\.0\.(.+)",
            lambda m: f"unet{int(m[1]) + 1}.up_transpose_conv.{m[2]}.layers.0.{m[3]}",
        ),
        # the release's last decoder stage is Sequential(ConvBlock, 1x1 conv): one level deeper
        (
            r"rec_blocks\.(\d+)\.up_blocks\.(\d+)\.([03])\.(.+)",
            lambda m: (
                f"unet{int(m[1]) + 1}.up_conv.{m[2]}."
                f"{'0.' if int(m[2]) == pools - 1 else ''}{_conv_block_index(m[3])}.{m[4]}"
            ),
        ),
        (
            r"rec_blocks\.(\d+)\.out_conv\.(.+)",
            lambda m: f"unet{int(m[1]) + 1}.up_conv.{pools - 1}.1.{m[2]}",
        ),
        (r"sr_blocks\.(\d+)\.(.+)", lambda m: f"ResBlock{int(m[1]) + 1}.{m[2]}"),
        # MMF: ours runs the global bottleneck on a pooled map; the release's Sequential starts
        # with its AdaptiveAvgPool2d, so its layer indices are one higher
        (
            r"mutual_fusions\.(\d+)\.(sr|rec)_local\.(\d+)\.(.+)",
            lambda m: f"bf{int(m[1]) + 1}.local_att{'' if m[2] == 'sr' else '2'}.{m[3]}.{m[4]}",
        ),
        (
            r"mutual_fusions\.(\d+)\.(sr|rec)_global\.(\d+)\.(.+)",
            lambda m: (
                f"bf{int(m[1]) + 1}.global_att{'' if m[2] == 'sr' else '2'}.{int(m[3]) + 1}.{m[4]}"
            ),
        ),
        (
            r"mutual_fusions\.(\d+)\.local_message\.(.+)",
            lambda m: f"bf{int(m[1]) + 1}.conv1.{m[2]}",
        ),
        (
            r"mutual_fusions\.(\d+)\.global_message\.(.+)",
            lambda m: f"bf{int(m[1]) + 1}.conv2.{m[2]}",
        ),
        (r"rec_tail\.(.+)", lambda m: f"tail3.{m[1]}"),
        (r"sr_tail\.(.+)", lambda m: f"tail2.{m[1]}"),
    ]
    for pattern, rename in rules:
        match = re.fullmatch(pattern, ours)
        if match:
            return rename(match)
    raise KeyError(f"{ours}: no release name for this tensor")


def unused_release_tensors(model) -> dict[str, tuple[tuple[int, ...], str]]:
    """The release's tensors that our ``model`` (a CMFNet) leaves out: name -> (shape, reason).
    ``tail1`` has the shapes of the SR tail; ``bf<i>.conv3`` those of the MMF's message conv."""
    state = model.state_dict()
    unused = {}
    for name, tensor in state.items():
        if name.startswith("sr_tail."):
            unused["tail1." + name[len("sr_tail.") :]] = (
                tuple(tensor.shape),
                UNUSED_REASONS["tail1"],
            )
        match = re.fullmatch(r"mutual_fusions\.(\d+)\.local_message\.(.+)", name)
        if match:
            unused[f"bf{int(match[1]) + 1}.conv3.{match[2]}"] = (
                tuple(tensor.shape),
                UNUSED_REASONS["conv3"],
            )
    return unused


def release_layout(model) -> tuple[dict[str, str], dict[str, tuple[tuple[int, ...], str]]]:
    """``(release name -> our name, unused release name -> (shape, reason))`` for ``model``."""
    mapping = {}
    for ours in model.state_dict():
        theirs = release_name(ours, model.rec_blocks[0].pools)
        if theirs in mapping:
            raise AssertionError(f"{theirs}: two of our tensors map to it")
        mapping[theirs] = ours
    return mapping, unused_release_tensors(model)


# --------------------------------------------------------------------------------------------
# reading the release checkpoint
# --------------------------------------------------------------------------------------------


class _AttributeDict(dict):
    """Plain stand-in for Lightning's ``AttributeDict`` (a dict) while unpickling."""


def _path_text(*parts: str) -> str:
    """Plain stand-in for a pickled ``pathlib`` path: its text."""
    return str(Path(*parts)) if parts else ""


#: the only pickled objects rebuilt (as plain data); everything else is refused unread
_SAFE_STAND_INS = [
    argparse.Namespace,
    (_AttributeDict, "pytorch_lightning.utilities.parsing.AttributeDict"),
    (_path_text, "pathlib.PosixPath"),
    (_path_text, "pathlib.WindowsPath"),
    (_path_text, "pathlib.PurePosixPath"),
    (_path_text, "pathlib.PureWindowsPath"),
    (_path_text, "pathlib.Path"),
]


def load_release_checkpoint(path: Path) -> dict:
    """The checkpoint dict (or a bare state dict as ``{"state_dict": ...}``), read with
    ``weights_only=True``; hyperparameters pickled as Namespace, AttributeDict or paths come back
    as plain data, any other pickled object is refused naming it."""
    import torch

    from cmfnet.checkpoint import checkpoint_load_error

    if not path.is_file():
        raise ReleaseImportError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(_SAFE_STAND_INS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ReleaseImportError(
            f"{checkpoint_load_error(path, err)}; only hyperparameters pickled as "
            "argparse.Namespace, Lightning's AttributeDict or pathlib paths are read, as plain data"
        ) from err
    if not isinstance(checkpoint, dict):
        raise ReleaseImportError(
            f"{path}: not a Lightning checkpoint (holds a {type(checkpoint).__name__})"
        )
    if "state_dict" not in checkpoint:
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return {"state_dict": checkpoint}  # a bare state dict
        raise ReleaseImportError(
            f"{path}: no 'state_dict' in the checkpoint "
            f"(top-level keys: {sorted(map(str, checkpoint))[:8]})"
        )
    if not isinstance(checkpoint["state_dict"], dict):
        raise ReleaseImportError(f"{path}: 'state_dict' is not a dict of tensors")
    return checkpoint


def hyperparameters(checkpoint: dict) -> dict:
    """The checkpoint's hyperparameters as a plain dict ({} if it records none)."""
    for key in HPARAMS_KEYS:
        value = checkpoint.get(key)
        if isinstance(value, argparse.Namespace):
            return dict(vars(value))
        if isinstance(value, dict):
            return dict(value)
    return {}


def strip_prefix(state: dict, prefix: Optional[str], path: Path) -> tuple[dict, str]:
    """The network's tensors without the LightningModule prefix, and the prefix. ``None``
    finds it: the release's ``Net.``, else ``net.``, ``model.`` or none, whichever precedes the
    target head ``head2.weight``. A tensor outside the prefix is refused, naming it."""
    if prefix is None:
        found = [p for p in (RELEASE_PREFIX, "net.", "model.", "") if f"{p}head2.weight" in state]
        if not found:
            raise ReleaseImportError(
                f"{path}: no release target head 'head2.weight' under the prefixes 'Net.', "
                "'net.', 'model.' or none: not a CMF-Net release checkpoint (or pass --prefix)"
            )
        prefix = found[0]
    outside = sorted(name for name in state if not name.startswith(prefix))
    if outside:
        raise ReleaseImportError(
            f"{path}: {len(outside)} tensors outside the network's prefix {prefix!r} "
            f"(e.g. {outside[0]!r}); refusing to drop them unread"
        )
    return {name[len(prefix) :]: tensor for name, tensor in state.items()}, prefix


def _shape(state: dict, name: str, what: str, path: Path) -> tuple[int, ...]:
    if name not in state:
        raise ReleaseImportError(f"{path}: missing tensor {name!r} ({what})")
    return tuple(state[name].shape)


def release_model_config(state: dict, path: Path) -> dict:
    """Our CMFNet config at the release network's widths and scale, read from the shapes."""
    width = _shape(state, "head2.weight", "the target head", path)[0]
    unet_width = _shape(
        state, "unet1.down_sample_layers.0.layers.0.weight", "the first U-Net", path
    )[0]
    reduced = _shape(state, "bf1.local_att.0.weight", "the first MMF bottleneck", path)[0]
    if reduced < 1 or width % reduced:
        raise ReleaseImportError(
            f"{path}: bf1.local_att.0.weight has {reduced} channels, not a divisor of the width "
            f"{width}"
        )
    stages = 0
    while f"tail2.0.{2 * stages}.weight" in state:
        stages += 1
    if stages == 0:
        raise ReleaseImportError(f"{path}: missing tensor 'tail2.0.0.weight' (the SR upsampler)")
    return {
        "_target_": "cmfnet.models.CMFNet",
        "scale": 2**stages,
        "width": width,
        "unet_width": unet_width,
        "unet_pools": RELEASE_UNET_POOLS,
        "n_fusion_levels": RELEASE_FUSION_LEVELS,
        "n_branch_steps": RELEASE_BRANCH_STEPS,
        "mmf_reduction": width // reduced,
        "res_scale": RELEASE_RES_SCALE,
        "mfa_kernel_sizes": list(RELEASE_MFA_KERNELS),
        "fusion": "mfa",
        "mutual_fusion": True,
        "mmf_update": "gated",
        "use_aux": True,
    }


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def map_state_dict(state: dict, model, path: Path) -> tuple[dict, dict]:
    """``(our state dict, dropped release name -> reason)``; refuses, naming them, tensors that
    are missing, unexpected or of another shape than the release network at these widths."""
    mapping, unused = release_layout(model)
    ours = model.state_dict()
    expected = {name: tuple(ours[our].shape) for name, our in mapping.items()}
    expected.update({name: shape for name, (shape, _) in unused.items()})
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(
        f"{name} {tuple(state[name].shape)}, expected {expected[name]}"
        for name in set(expected) & set(state)
        if tuple(state[name].shape) != expected[name]
    )
    for label, names in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("of another shape", reshaped),
    ):
        if names:
            raise ReleaseImportError(
                f"{path}: {len(names)} release tensor{'s' if len(names) > 1 else ''} {label}: "
                f"{_listed(names)}"
            )
    weights = {mapping[name]: state[name] for name in mapping}
    return weights, {name: reason for name, (_, reason) in unused.items()}


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


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

    from cmfnet.io import atomic_path, write_text_atomic
    from cmfnet.models import build_model
    from cmfnet.ownership import claim_folder

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
