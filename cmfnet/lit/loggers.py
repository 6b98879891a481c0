"""Loggers: the ``logger`` group built for a run, what every run logs first, and closing W&B.

:class:`WandbRunLogger` is Lightning's W&B logger without the settings that recent W&B
versions warn about.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import hydra
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, open_dict

from cmfnet.runs.config import redacted_console, secrets_in_use
from cmfnet.runs.errors import one_line

log = logging.getLogger(__name__)
_redaction = ExitStack()  # the console redaction of the run in progress (closed by finish_wandb)

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


def wandb_run_ids(out: Path) -> list[str]:
    """The ids of the W&B runs kept in run folder ``out`` (``wandb/offline-run-<time>-<id>``,
    ``wandb/run-<time>-<id>``), oldest first."""
    folders = sorted((out / "wandb").glob("*run-*-*"), key=lambda p: p.name.split("run-", 1)[1])
    return [p.name.rsplit("-", 1)[1] for p in folders if p.is_dir() and not p.is_symlink()]


def continue_wandb_run(logger_cfgs: Optional[DictConfig], out: Path) -> None:
    """A run that continues from its folder's last.ckpt logs into the W&B run it started (same
    id, ``resume="allow"``): online, W&B appends to it; offline, each part is a folder of its
    own under ``out/wandb/`` with the same id, and ``wandb sync`` uploads them in order into one
    run. A W&B id given in the config is kept."""
    ids = wandb_run_ids(out)
    for logger_cfg in (logger_cfgs or {}).values():
        if ids and "wandb" in str(logger_cfg.get("_target_", "")).lower():
            with open_dict(logger_cfg):
                if logger_cfg.get("id") is None:
                    logger_cfg.id = ids[-1]
                    logger_cfg.resume = "allow"


def redact_console_until_finish() -> None:
    """From here until :func:`finish_wandb`, every secret this process was given is redacted
    from what is printed, before W&B's console capture (installed when the run started) sees
    it (:func:`cmfnet.runs.config.redacted_console`)."""
    _redaction.close()
    _redaction.enter_context(redacted_console(secrets_in_use()))


def finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun opens its own. When W&B's service process
    has already ended (SLURM signals every process of a job it pre-empts or requeues), the run
    keeps what the service had written, and one warning says so instead of an error."""
    _redaction.close()
    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is None:
        return
    errors = []
    # teardown flushes the run's files before the next job or the process exit; it is tried
    # also after a failed finish, as it unhooks W&B's exit handler (which would fail again)
    for close in (wandb.finish, wandb.teardown):
        try:
            close()
        except Exception as err:
            errors.append(err)
    if errors:
        log.warning(
            "W&B's service process ended before the run was closed (%s); the run keeps what it "
            "had written",
            one_line(errors[0]),
        )
