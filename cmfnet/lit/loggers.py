"""Loggers: the ``logger`` group built for a run, what every run logs first, and closing W&B.

:class:`WandbRunLogger` is Lightning's W&B logger without the settings that recent W&B
versions warn about.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import hydra
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

WANDB_MODES = ("offline", "online", "disabled", "shared", "dryrun", "run")  # what wandb accepts


class WandbRunLogger(WandbLogger):
    """:class:`~lightning.pytorch.loggers.WandbLogger` that leaves W&B's removed ``anonymous``
    setting out of ``wandb.init`` (Lightning passes ``anonymous=None``, which W&B >= 0.19 answers
    with "The anonymous setting has no effect"). Takes WandbLogger's arguments."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


def build_loggers(logger_cfgs: Optional[DictConfig], out: Path) -> list:
    """Instantiate the ``logger`` group (``logger_cfgs``: name -> config); W&B keeps its files
    in the run folder ``out``, offline unless its ``mode`` says otherwise."""
    loggers = []
    for name, logger_cfg in (logger_cfgs or {}).items():
        if "wandb" in str(logger_cfg.get("_target_", "")).lower():
            if logger_cfg.get("mode") not in WANDB_MODES:
                raise ValueError(
                    f"logger.{name}.mode: {logger_cfg.get('mode')!r} "
                    f"is not one of {', '.join(WANDB_MODES)} "
                    "(it follows WANDB_MODE unless given)"
                )
            os.environ.setdefault("WANDB_DIR", str(out))
            os.environ.setdefault("WANDB_CACHE_DIR", str(out / "wandb" / "cache"))
            os.environ.setdefault("WANDB_CONFIG_DIR", str(out / "wandb" / "config"))
            os.environ.setdefault("WANDB_DATA_DIR", str(out / "wandb" / "data"))
            os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(hydra.utils.instantiate(logger_cfg))
    return loggers


def log_run_header(loggers: list, run_config: dict, summary) -> None:
    """Log the (sanitized) run config and the model summary to every logger; W&B also gets the
    parameters and MACs per block as a table."""
    for logger in loggers:
        logger.log_hyperparams(run_config)
        logger.log_hyperparams(
            {"model_summary/params": summary.total_params, "model_summary/macs": summary.macs}
        )
        if hasattr(logger, "log_table"):
            rows = [[b.name, b.type, b.params, b.macs] for b in summary.blocks]
            logger.log_table(
                key="model_summary", columns=["block", "type", "params", "macs"], data=rows
            )


def finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun opens its own."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
            wandb.teardown()  # flush the run's files before the next job or the process exit
