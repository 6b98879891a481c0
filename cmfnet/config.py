"""OmegaConf resolvers used by the configs, and scrubbing of secrets before logging."""

from __future__ import annotations

import copy
import math
import os
import re
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from cmfnet.masks import center_fraction_for

SECRET_KEY_PATTERN = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential)", re.IGNORECASE)
REDACTED = "<redacted>"
TINY_GROUPS = ("model", "data")
WIDTH_FLOOR = 4


def register_resolvers() -> None:
    """Register the resolvers the configs use.

    ``${fastmri_center_fraction:accel}``: fastMRI's centre fraction (4 -> 0.08, 8 -> 0.04).
    ``${process_id:}``: this process's id, cached in the config, so that two sweeps started in
    the same second get different folders.
    ``${cuda_available:}``: whether this process sees a CUDA device (cuDNN autotuning, pinned
    memory). ``${fastest_precision:}``: the trainer precision of the GPU default (see
    :func:`fastest_precision`). ``${on_cuda:a,b}``: ``a`` where this process sees a CUDA
    device, else ``b`` (the loader's workers). All three are resolved in the job, so a
    ``launcher=gpus`` job sees the one GPU it is pinned to.
    """
    if not OmegaConf.has_resolver("fastmri_center_fraction"):
        OmegaConf.register_new_resolver("fastmri_center_fraction", center_fraction_for)
    if not OmegaConf.has_resolver("process_id"):
        OmegaConf.register_new_resolver("process_id", lambda: str(os.getpid()), use_cache=True)
    if not OmegaConf.has_resolver("cuda_available"):
        OmegaConf.register_new_resolver("cuda_available", cuda_available)
    if not OmegaConf.has_resolver("fastest_precision"):
        OmegaConf.register_new_resolver("fastest_precision", fastest_precision)
    if not OmegaConf.has_resolver("folder_name"):
        OmegaConf.register_new_resolver("folder_name", folder_name)
    if not OmegaConf.has_resolver("on_cuda"):
        OmegaConf.register_new_resolver("on_cuda", lambda if_cuda, otherwise: if_cuda if cuda_available() else otherwise)


def folder_name(text: str, limit: int = 160) -> str:
    """``text`` as one folder name: each ``/`` becomes ``_`` (a path given as an override value
    would otherwise nest folders), and beyond ``limit`` characters it is cut and ends in a short
    hash of the whole text (file systems allow 255 bytes per name)."""
    import hashlib

    name = str(text).replace(os.sep, "_")
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return name.encode()[: limit - 11].decode(errors="ignore") + "~" + digest


def cuda_available() -> bool:
    """Whether this process sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def fastest_precision() -> str:
    """``bf16-mixed`` on a CUDA device with native bf16 (compute capability 8.0 or later:
    A100, H100, L40S, ...), else ``32-true``. bf16 autocast keeps CMF-Net's metrics within the
    seed-to-seed spread of fp32 (``sweeps=precision``, docs/performance.md)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8:
        return "bf16-mixed"
    return "32-true"


def is_int(value: Any) -> bool:
    """An int and not a bool (YAML's true/false are bools, and bool is an int subclass)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def apply_tiny_preset(node: DictConfig | dict, tiny: bool) -> DictConfig | dict:
    """Remove a group node's ``tiny:`` preset (in place) and return the node, with the preset's
    values merged over it when ``tiny`` is set (a new DictConfig or dict, like the input)."""
    preset = node.pop("tiny", None)
    if not (tiny and preset):
        return node
    return OmegaConf.merge(node, preset) if isinstance(node, DictConfig) else {**node, **preset}


def overridden_keys(overrides: Sequence[str], groups: Sequence[str] = TINY_GROUPS) -> list[str]:
    """Dotted config keys under ``groups`` that command-line ``overrides`` set (``data.batch_size=1``,
    ``+model.x=2``); group selections (``model=edsr``) and deletions are left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if "." in key and key.split(".")[0] in groups and not override.is_delete():
            keys.append(key)
    return keys


def shrink_config(cfg: DictConfig, overrides: Sequence[str] = ()) -> DictConfig:
    """Scale the model's channel widths by ``cfg.width_factor``, apply each group's ``tiny``
    preset when ``cfg.tiny`` is set, then drop the presets.

    ``width_factor`` multiplies every model key ending in ``width`` (feature channels, U-Net
    base channels) and keeps depths: the one shrinking rule of the small-scale protocol. A width
    below 1 is left as it is, for the model to refuse.

    A group config (model, data) may carry a ``tiny:`` mapping of overrides that make it small
    enough for smoke tests; ``experiment=smoke`` sets ``tiny: true``. The keys that the
    command-line ``overrides`` set win over the preset (``experiment=smoke data.batch_size=4``
    trains at batch 4).
    """
    cfg = copy.deepcopy(cfg)
    explicit = {key: OmegaConf.select(cfg, key, throw_on_missing=False) for key in overridden_keys(overrides)
                if key.split(".")[1] != "tiny"}
    factor = cfg.get("width_factor", 1.0)
    if not factor > 0:
        raise ValueError(f"width_factor must be > 0, got {factor}")

    def scaled(key: str, width: Any) -> Any:
        if factor != 1.0 and key.startswith("model.") and key.endswith("width") and isinstance(width, int) and width >= 1:
            return max(WIDTH_FLOOR, round(width * factor))
        return width

    with open_dict(cfg):
        for key in [k for k in cfg.model if str(k).endswith("width")]:
            cfg.model[key] = scaled(f"model.{key}", cfg.model[key])
        for group in TINY_GROUPS:
            node = cfg.get(group)
            if isinstance(node, DictConfig):
                cfg[group] = apply_tiny_preset(node, bool(cfg.tiny))
        for key, value in explicit.items():
            OmegaConf.update(cfg, key, scaled(key, value), merge=False)
    return cfg


def _secret_values() -> set[str]:
    """Values of environment variables whose names look like secrets (e.g. WANDB_API_KEY)."""
    return {v for k, v in os.environ.items() if SECRET_KEY_PATTERN.search(k) and len(v) >= 8}


def redact_argument(arg: str, secrets: set[str]) -> str:
    """A command-line argument with a secret-looking override's value (``+hf_token=...``) and any
    secret environment value replaced by ``<redacted>``."""
    key, sep, _ = arg.partition("=")
    if sep and SECRET_KEY_PATTERN.search(key):
        return f"{key}={REDACTED}"
    for secret in secrets:
        arg = arg.replace(secret, REDACTED)
    return arg


@contextmanager
def redacted_argv() -> Iterator[None]:
    """Within the block, ``sys.argv`` has its secrets redacted (W&B records the command line in
    its run files, which ``wandb sync`` uploads); the original is restored afterwards, as
    Lightning's DDP launcher starts the other ranks with it."""
    original = list(sys.argv)
    secrets = _secret_values()
    sys.argv[:] = [original[0], *(redact_argument(arg, secrets) for arg in original[1:])]
    try:
        yield
    finally:
        sys.argv[:] = original


def sanitize_config(data: Any, _secrets: set[str] | None = None) -> Any:
    """Copy of a plain config with secret-looking keys and any secret environment value redacted."""
    secrets = _secret_values() if _secrets is None else _secrets
    if isinstance(data, dict):
        return {
            k: REDACTED if SECRET_KEY_PATTERN.search(str(k)) else sanitize_config(v, secrets)
            for k, v in data.items()
        }
    if isinstance(data, (list, tuple)):
        return type(data)(sanitize_config(v, secrets) for v in data)
    if isinstance(data, str) and any(s in data for s in secrets):
        return REDACTED
    return data
