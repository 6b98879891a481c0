"""The resolvers the configs use, registered by ``import cmfnet``: one table, one loop."""

from __future__ import annotations

from typing import Any, Callable

from omegaconf import OmegaConf

from cmfnet.runs.config import (
    compact_number,
    cuda_available,
    data_read,
    fastest_precision,
    fastmri_center_fraction,
    folder_name,
    lowres_side,
    multirun_group,
    on_cuda,
    process_id,
    scaled_width,
)

#: Every resolver the configs use: name -> (function, whether its value is cached in the
#: config). ``cuda_available``, ``fastest_precision`` and ``on_cuda`` are resolved in the job, so
#: a ``launcher=gpus`` job sees the one GPU it is pinned to. ``data_read`` and
#: ``multirun_group`` name, group and tag a run in W&B (``conf/logger/wandb.yaml``) with the values
#: ``metrics.json`` records (:data:`cmfnet.runs.settings.RUN_IDENTITY`).
RESOLVERS: dict[str, tuple[Callable[..., Any], bool]] = {
    "fastmri_center_fraction": (fastmri_center_fraction, False),
    "process_id": (process_id, True),
    "cuda_available": (cuda_available, False),
    "fastest_precision": (fastest_precision, False),
    "folder_name": (folder_name, False),
    "on_cuda": (on_cuda, False),
    "scaled_width": (scaled_width, False),
    "lowres_side": (lowres_side, False),
    "compact_number": (compact_number, False),
    "data_read": (data_read, False),
    "multirun_group": (multirun_group, False),
}


def register_resolvers() -> None:
    """Register every resolver of :data:`RESOLVERS` that is not registered yet."""
    for name, (resolver, use_cache) in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=use_cache)
