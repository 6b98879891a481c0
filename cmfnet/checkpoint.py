"""Safe loading of cmfnet training checkpoints and rebuilding their network.

Checkpoints are Lightning checkpoints written by :mod:`cmfnet.train`: ``checkpoint["state_dict"]``
holds the LightningModule's weights (the network under the ``model.`` prefix) and
``checkpoint["cmfnet_config"]`` the resolved run config as a plain dict. They are read with
``torch.load(..., weights_only=True)``: tensors, containers and primitive values only, never
arbitrary pickled objects (unpickling can run code). The config is data too: a ``_target_`` in
it is built only when it names one of cmfnet's own model or mask classes
(:func:`check_trusted_target`), since instantiating an arbitrary ``_target_`` runs whatever it
names. Every failure is a :class:`CheckpointError` whose one-line message names the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

MODEL_PREFIX = "model."
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, unsafe or not written by cmfnet."""


def root_message(err: BaseException) -> str:
    """First line of the message of the innermost cause of ``err`` (Hydra wraps errors)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _load_error(path: Path, err: Exception) -> CheckpointError:
    """Classify a ``torch.load`` failure into a one-line message naming ``path``."""
    unsafe = _UNSAFE_GLOBAL.search(str(err))
    if unsafe:
        return CheckpointError(
            f"{path}: the checkpoint contains a pickled object ({unsafe.group(1)}); refusing to "
            "unpickle it (loaded with weights_only=True: tensors and plain values only)"
        )
    return CheckpointError(
        f"{path}: not a readable torch checkpoint (truncated or corrupted?): "
        f"{type(err).__name__}: {root_message(err)[:200]}"
    )


def load_checkpoint(path: str | Path) -> dict:
    """Load a cmfnet Lightning checkpoint on the CPU without unpickling arbitrary objects.

    Returns the checkpoint dict; it has at least ``state_dict`` (dict of tensors) and
    ``cmfnet_config`` (dict). Raises :class:`CheckpointError` naming the file when it is
    missing, truncated or corrupted, holds pickled custom objects, or is a foreign checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError, ...
        raise _load_error(path, err) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (holds a {type(checkpoint).__name__}, not a dict)")
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint: no 'state_dict' (top-level keys: {sorted(map(str, checkpoint))[:8]})"
        )
    if not isinstance(checkpoint.get("cmfnet_config"), dict):
        raise CheckpointError(
            f"{path}: no 'cmfnet_config' in the checkpoint: it was not written by cmfnet training "
            "(run.py), so the model and degradation cannot be rebuilt"
        )
    return checkpoint


def _names_a_target(value: Any) -> bool:
    """Whether a config value holds a ``_target_`` key at any depth."""
    if isinstance(value, dict):
        return "_target_" in value or any(_names_a_target(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_names_a_target(v) for v in value)
    return False


def check_trusted_target(node: dict, key: str, namespace: str, base: type, path: str | Path) -> None:
    """Refuse ``cmfnet_config[key]`` unless its ``_target_`` is ``<namespace>.<Class>`` for a
    public class of that cmfnet module derived from ``base``, and no value nested in it names a
    ``_target_`` of its own. The module is imported by its fixed name, never by one read from the
    file, so a refused checkpoint runs no code."""
    import importlib

    target = node.get("_target_")
    name = target[len(namespace) + 1:] if isinstance(target, str) and target.startswith(namespace + ".") else ""
    found = getattr(importlib.import_module(namespace), name, None) if name.isidentifier() and not name.startswith("_") else None
    nested = [k for k, v in node.items() if k != "_target_" and _names_a_target(v)]
    if not (isinstance(found, type) and issubclass(found, base) and found.__module__.startswith(namespace)) or nested:
        what = f"a nested _target_ under {nested[0]!r}" if nested and found else repr(target)
        raise CheckpointError(
            f"{path}: cmfnet_config['{key}'] names {what}, not one of cmfnet's {namespace} classes; "
            "refusing to build it (a checkpoint's config may name only cmfnet's own classes)"
        )


def config_value(config: dict, key: str, path: str | Path) -> Any:
    """``config[key]`` of a checkpoint's run config; CheckpointError naming the file if absent."""
    if key not in config:
        raise CheckpointError(f"{path}: cmfnet_config has no '{key}' entry")
    return config[key]


def build_model_from_checkpoint(path: str | Path):
    """Rebuild the trained network of a checkpoint, in eval mode on the CPU.

    The architecture comes from ``cmfnet_config["model"]`` (built with
    :func:`cmfnet.models.build_model`), the weights from the ``model.``-prefixed entries of the
    state dict, loaded strictly. Returns ``(model, config)`` with ``config`` the run config dict.
    Raises :class:`CheckpointError` naming the file when the config cannot be built or the
    weights do not match the architecture.
    """
    from cmfnet.models import JointModel, build_model

    path = Path(path)
    checkpoint = load_checkpoint(path)
    config = checkpoint["cmfnet_config"]
    model_cfg = config_value(config, "model", path)
    if not isinstance(model_cfg, dict) or "_target_" not in model_cfg:
        raise CheckpointError(f"{path}: cmfnet_config['model'] is not a model config with a '_target_'")
    check_trusted_target(model_cfg, "model", "cmfnet.models", JointModel, path)
    try:
        model = build_model(model_cfg)
    except Exception as err:
        raise CheckpointError(f"{path}: cannot build the model {model_cfg['_target_']}: {root_message(err)}") from err
    weights = {
        name[len(MODEL_PREFIX):]: tensor
        for name, tensor in checkpoint["state_dict"].items()
        if name.startswith(MODEL_PREFIX)
    }
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit {model_cfg['_target_']}: {mismatch_summary(model, weights)}") from err
    return model.eval(), config


def mismatch_summary(model, weights: dict) -> str:
    """One line listing missing, unexpected and wrongly shaped parameters (first few of each)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    reshaped = sorted(
        f"{name} {tuple(weights[name].shape)} vs {tuple(expected[name].shape)}"
        for name in set(expected) & set(weights)
        if tuple(weights[name].shape) != tuple(expected[name].shape)
    )
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", reshaped)):
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            parts.append(f"{len(names)} {label} ({shown})")
    return "; ".join(parts) or "incompatible state dict"
