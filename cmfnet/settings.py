"""A run's settings: the checks made before anything is built, and what identifies the run."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cmfnet.checkpoint import TEST_CHECKPOINTS
from cmfnet.config import compact_number, data_read, is_int, is_number

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


def run_identity(cfg: DictConfig) -> dict:
    """What identifies a run in metrics.json and tables: model, scale, accel, mask, data, seed,
    scoring. ``conf/logger/wandb.yaml`` tags the W&B run with the same values through the same
    resolvers (:func:`cmfnet.config.register_identity_resolvers`)."""
    choices = HydraConfig.get().runtime.choices
    return {
        "model": choices.get("model", "model"),
        "scale": int(cfg.scale),
        "accel": compact_number(cfg.accel),
        "mask": choices.get("mask", "mask"),
        "data": data_read(
            OmegaConf.select(cfg, "data.root", throw_on_missing=False), choices.get("data", "data")
        ),
        "seed": int(cfg.seed),
        "scoring": OmegaConf.select(cfg, "scoring.name", default="fastmri"),
    }
