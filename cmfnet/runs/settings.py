"""A run's settings: the checks made before anything is built, and what identifies the run."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cmfnet.runs.checkpoint import TEST_CHECKPOINTS
from cmfnet.runs.config import compact_number, data_read, is_int, is_number

#: Settings checked before anything is built: (key, test, what the key must be).
SETTING_CHECKS = (
    ("seed", lambda v: is_int(v) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
    ("scale", is_int, "an integer"),
    ("accel", lambda v: is_number(v) and v > 1, "a finite number > 1"),
    (
        "summary_input_hw",
        lambda v: len(v) == 2 and all(is_int(x) and x >= 1 for x in v),
        "two positive integers",
    ),
    ("trainer.max_epochs", lambda v: is_int(v) and v >= -1, "an integer >= -1 (-1: no limit)"),
    ("optimizer.lr", lambda v: v is None or (is_number(v) and v > 0), "a finite number > 0"),
    ("test_checkpoint", lambda v: v in TEST_CHECKPOINTS, "'best' or 'last'"),
)


def check_settings(cfg: DictConfig) -> None:
    """Refuse a setting of the wrong type or range, naming it (a library would fail later with a
    message that names neither the setting nor the value)."""
    for key, test, wanted in SETTING_CHECKS:
        value = OmegaConf.select(cfg, key)
        try:
            ok = test(value)
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"{key} must be {wanted}, got {value!r}")


#: What identifies a run, in this order: metrics.json, the sweep's results tables and the report
#: read these keys (the W&B tags in ``conf/logger/wandb.yaml`` are checked against them). Each
#: value is read from the job's config and its Hydra choices.
RUN_IDENTITY: dict[str, Callable[[DictConfig, Mapping[str, Any]], Any]] = {
    "model": lambda cfg, choices: choices.get("model", "model"),
    "scale": lambda cfg, choices: int(cfg.scale),
    "accel": lambda cfg, choices: compact_number(cfg.accel),
    "mask": lambda cfg, choices: choices.get("mask", "mask"),
    "data": lambda cfg, choices: data_read(
        OmegaConf.select(cfg, "data.root", throw_on_missing=False), choices.get("data", "data")
    ),
    "seed": lambda cfg, choices: int(cfg.seed),
    "scoring": lambda cfg, choices: OmegaConf.select(cfg, "scoring.name", default="fastmri"),
}


def run_identity(cfg: DictConfig) -> dict:
    """:data:`RUN_IDENTITY` of the job's config (in the job: it reads Hydra's choices)."""
    choices = HydraConfig.get().runtime.choices
    return {key: read(cfg, choices) for key, read in RUN_IDENTITY.items()}
