"""Reading a release checkpoint without running its pickled code, its hyperparameters, the model
config its tensors' shapes give, and its tensors mapped onto our network.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from cmfnet.commands.import_release.layout import (
    RELEASE_BRANCH_STEPS,
    RELEASE_FUSION_LEVELS,
    RELEASE_MFA_KERNELS,
    RELEASE_RES_SCALE,
    RELEASE_UNET_POOLS,
    ReleaseImportError,
    release_layout,
)

#: the LightningModule attribute holding the network in the release (``self.Net = net()``)
RELEASE_PREFIX = "Net."


#: where Lightning versions keep the hyperparameters
HPARAMS_KEYS = ("hyper_parameters", "hparams", "module_arguments")


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

    from cmfnet.runs.checkpoint import checkpoint_load_error

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
