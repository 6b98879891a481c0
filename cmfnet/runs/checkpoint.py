"""Safe loading of cmfnet training checkpoints and rebuilding their network.

Checkpoints are Lightning checkpoints written by :mod:`cmfnet.train`: ``checkpoint["state_dict"]``
holds the LightningModule's weights (the network under the ``model.`` prefix) and
``checkpoint["cmfnet_config"]`` the resolved run config as a plain dict. They are read with
``torch.load(..., weights_only=True)``: tensors, containers and primitive values only, never
arbitrary pickled objects (unpickling can run code). The config is data too: a ``_target_`` in
it is built only when it names one of cmfnet's own model or mask classes
(:func:`check_trusted_target`), since instantiating an arbitrary ``_target_`` runs whatever it
names. Every failure is a :class:`CheckpointError` whose one-line message names the file.

A training run checks the checkpoint it resumes from before Lightning reads it
(:func:`resolve_ckpt_path`) and picks the one its test set scores (:func:`tested_checkpoint`).
"""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from cmfnet.runs.errors import DataError, one_line
from cmfnet.runs.renames import current_targets

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch import nn

log = logging.getLogger(__name__)

MODEL_PREFIX = "model."
#: The choices of ``test_checkpoint``: the weights the test set scores.
TEST_CHECKPOINTS = ("best", "last")
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, unsafe or not written by cmfnet."""


def checkpoint_load_error(path: Path, err: Exception) -> CheckpointError:
    """Classify a ``torch.load`` failure into a one-line message naming ``path``."""
    unsafe = _UNSAFE_GLOBAL.search(str(err))
    if unsafe:
        return CheckpointError(
            f"{path}: the checkpoint contains a pickled object ({unsafe.group(1)}); refusing to "
            "unpickle it (loaded with weights_only=True: tensors and plain values only)"
        )
    return CheckpointError(
        f"{path}: not a readable torch checkpoint (truncated or corrupted?): {one_line(err)[:200]}"
    )


def load_checkpoint(path: str | Path) -> dict:
    """Load a cmfnet Lightning checkpoint on the CPU without unpickling arbitrary objects.

    Returns the checkpoint dict; it has at least ``state_dict`` (dict of tensors) and
    ``cmfnet_config`` (dict), whose ``_target_`` paths name today's modules (a checkpoint of an
    earlier layout names the old ones: :mod:`cmfnet.runs.renames`). Raises
    :class:`CheckpointError` naming the file when it is missing, truncated or corrupted, holds
    pickled custom objects, or is a foreign checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError, ...
        raise checkpoint_load_error(path, err) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint (holds a {type(checkpoint).__name__}, not a dict)"
        )
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint: no 'state_dict' "
            f"(top-level keys: {sorted(map(str, checkpoint))[:8]})"
        )
    if not isinstance(checkpoint.get("cmfnet_config"), dict):
        raise CheckpointError(
            f"{path}: no 'cmfnet_config' in the checkpoint: it was not written by cmfnet training "
            "(run.py), so the model and degradation cannot be rebuilt"
        )
    checkpoint["cmfnet_config"] = current_targets(checkpoint["cmfnet_config"])
    return checkpoint


def _names_a_target(value: Any) -> bool:
    """Whether a config value holds a ``_target_`` key at any depth."""
    if isinstance(value, dict):
        return "_target_" in value or any(_names_a_target(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_names_a_target(v) for v in value)
    return False


def check_trusted_target(
    node: dict, key: str, namespace: str, base: type, path: str | Path
) -> None:
    """Refuse ``cmfnet_config[key]`` unless its ``_target_`` is ``<namespace>.<Class>`` for a
    public class of that cmfnet module derived from ``base``, and every value nested in it that
    names a ``_target_`` is itself such a node (a pipeline's stages: any ``nn.Module`` class of
    the namespace) and nothing else. The module is imported by its fixed name, never by one read
    from the file, so a refused checkpoint runs no code."""
    import importlib

    from torch import nn

    target = node.get("_target_")
    name = (
        target[len(namespace) + 1 :]
        if isinstance(target, str) and target.startswith(namespace + ".")
        else ""
    )
    found = (
        getattr(importlib.import_module(namespace), name, None)
        if name.isidentifier() and not name.startswith("_")
        else None
    )
    nested = []
    for child_key, value in node.items():
        if child_key == "_target_" or not _names_a_target(value):
            continue
        if isinstance(value, dict) and "_target_" in value:
            check_trusted_target(value, f"{key}.{child_key}", namespace, nn.Module, path)
        else:
            nested.append(child_key)
    if (
        not (
            isinstance(found, type)
            and issubclass(found, base)
            and found.__module__.startswith(namespace)
        )
        or nested
    ):
        what = f"a nested _target_ under {nested[0]!r}" if nested and found else repr(target)
        raise CheckpointError(
            f"{path}: cmfnet_config['{key}'] names {what}, "
            f"not one of cmfnet's {namespace} classes; "
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
        raise CheckpointError(
            f"{path}: cmfnet_config['model'] is not a model config with a '_target_'"
        )
    check_trusted_target(model_cfg, "model", "cmfnet.models", JointModel, path)
    try:
        model = build_model(model_cfg)
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot build the model {model_cfg['_target_']}: {one_line(err)}"
        ) from err
    weights = {
        name[len(MODEL_PREFIX) :]: tensor
        for name, tensor in checkpoint["state_dict"].items()
        if name.startswith(MODEL_PREFIX)
    }
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: the weights do not fit {model_cfg['_target_']}: "
            f"{mismatch_summary(model, weights)}"
        ) from err
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
    for label, names in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch", reshaped),
    ):
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            parts.append(f"{len(names)} {label} ({shown})")
    return "; ".join(parts) or "incompatible state dict"


def archive_defect(path: Path) -> Optional[str]:
    """Why ``path`` is not a complete checkpoint (a torch zip archive whose members pass their
    CRC check), or None when it is one."""
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        return f"truncated or not a checkpoint ({err})"
    return None if broken is None else f"corrupted ({broken} fails its CRC check)"


def readable_fallback(last: Path) -> Optional[Path]:
    """The newest complete checkpoint beside an unreadable ``last``, or None. The unreadable
    file is kept, renamed ``<name>.unreadable`` (numbered if that exists), so that Lightning's
    next ``last.ckpt`` does not replace it."""
    newest_first = sorted(
        (p for p in last.parent.glob("*.ckpt") if p != last),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )  # checked one by one: a CRC check reads the whole file
    readable = next((p for p in newest_first if archive_defect(p) is None), None)
    if readable is None:
        return None
    kept = last.with_name(f"{last.name}.unreadable")
    number = 1
    while kept.exists():
        kept, number = last.with_name(f"{last.name}.unreadable-{number}"), number + 1
    last.rename(kept)
    log.warning(
        "%s is unreadable; kept as %s; continuing from %s, the newest readable checkpoint of "
        "this run (the epochs after it are trained again)",
        last,
        kept.name,
        readable.name,
    )
    return readable


def resolve_ckpt_path(ckpt_path: Optional[str], out: Path, module: nn.Module) -> Optional[str]:
    """``last`` means this run folder's ``checkpoints/last.ckpt``; a path must exist, be a
    complete checkpoint (:func:`archive_defect`) and hold weights that fit ``module`` (the run's
    configured network). An unreadable ``last.ckpt`` (killed during a write that was not atomic,
    a full disk) gives way to the run's newest readable checkpoint (:func:`readable_fallback`)."""
    import torch

    if ckpt_path in (None, ""):
        return None
    path = out / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no checkpoint at {path}")
    defect = archive_defect(path)
    if defect is not None and ckpt_path == "last":
        fallback = readable_fallback(path)
        if fallback is not None:
            path, defect = fallback, None
    if defect is not None:
        raise DataError(f"ckpt_path={ckpt_path}: {path} is {defect}")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(
            "state_dict", {}
        )
    except Exception:  # e.g. pickled objects of an older Lightning: Lightning's own loading decides
        return str(path)
    expected = module.state_dict()
    if set(weights) != set(expected) or any(
        weights[k].shape != expected[k].shape for k in expected
    ):
        raise DataError(
            f"ckpt_path={ckpt_path}: {path} does not fit this run's model "
            f"({type(module.model).__name__}): {mismatch_summary(module, weights)}"
        )
    return str(path)


def tested_checkpoint(choice: str, callback: Optional[ModelCheckpoint]) -> Optional[str]:
    """The checkpoint the test set scores (``test_checkpoint``): ``best`` on validation SR PSNR,
    or ``last`` (None: the weights as training left them). A best path outside this run's
    checkpoint folder is another run's (Lightning restores it when a run resumes from that run's
    finished checkpoint and trains no epoch), so this run's weights are tested instead."""
    if choice not in TEST_CHECKPOINTS:
        raise ValueError(f"test_checkpoint must be 'best' or 'last', got {choice!r}")
    best = callback.best_model_path if callback is not None and choice == "best" else ""
    if best and not Path(best).resolve().is_relative_to(Path(callback.dirpath).resolve()):
        log.warning("best checkpoint %s is another run's; testing this run's weights", best)
        return None
    return best or None
