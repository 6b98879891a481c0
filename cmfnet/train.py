"""The training task: compose objects from the config, fit, test, and write metrics.json.

``run.py`` is a thin Hydra entry point over :func:`run_task`. Every object is built with
``hydra.utils.instantiate`` from its own config node; what a node is given beyond its config is
said once, in :mod:`cmfnet.lit.injections`. Nothing a researcher would sweep is a constant here.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from cmfnet.lit import injections
from cmfnet.lit.images import save_examples
from cmfnet.lit.loggers import (
    build_loggers,
    continue_wandb_run,
    finish_wandb,
    log_run_header,
    redact_console_until_finish,
)
from cmfnet.lit.startup import startup_times
from cmfnet.models.summary import format_summary, model_summary
from cmfnet.mri.metrics import (
    METRIC_KEYS,
    OUTPUTS,
    VOLUME_SCORES_FILE,
    metric_digits,
    volume_scores_csv,
)
from cmfnet.runs import signals
from cmfnet.runs.checkpoint import resolve_ckpt_path, tested_checkpoint
from cmfnet.runs.config import redacted_argv, sanitize_config
from cmfnet.runs.errors import one_line
from cmfnet.runs.io import write_json_atomic, write_text_atomic
from cmfnet.runs.queued_logging import queued_logging
from cmfnet.runs.quiet import silence_third_party_noise
from cmfnet.runs.settings import check_settings, run_identity
from cmfnet.sweeps.rerun import interrupted_record, resume_requeued_job

log = logging.getLogger(__name__)

silence_third_party_noise()


def output_dir() -> Path:
    """This job's output folder (Hydra's run or sweep sub-folder)."""
    return Path(HydraConfig.get().runtime.output_dir)


def is_multirun() -> bool:
    """Whether this job is one of a multirun's."""
    return HydraConfig.get().mode == RunMode.MULTIRUN


def train(cfg: DictConfig) -> tuple[dict, Optional[float]]:
    """Fit (unless the model has no parameters to train), test, and return the metrics and the
    best validation SR PSNR (:func:`validation_score`).

    The callbacks are built first, as the job's start-up clock starts with them
    (:class:`~cmfnet.lit.startup.StartupTimer`). The config is then resolved once, so that
    config.yaml, the W&B name and tags (``conf/logger/wandb.yaml``) and metrics.json agree.
    """
    out = output_dir()
    check_settings(cfg)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    cfg = copy.deepcopy(cfg)
    OmegaConf.resolve(cfg)
    identity = run_identity(cfg)
    L.seed_everything(cfg.seed, workers=True)
    run_config = sanitize_config(OmegaConf.to_container(cfg))
    OmegaConf.save(OmegaConf.create(run_config), out / "config.yaml")

    datamodule = hydra.utils.instantiate(cfg.data, **injections.data_kwargs(cfg))
    model = hydra.utils.instantiate(cfg.model)
    summary = model_summary(model, input_hw=tuple(cfg.summary_input_hw), scale=cfg.scale)
    log.info("model summary\n%s", format_summary(summary))
    model = hydra.utils.instantiate(cfg.performance)(model)
    loss = hydra.utils.instantiate(cfg.loss)
    module = hydra.utils.instantiate(cfg.module, _partial_=True)(
        **injections.module_kwargs(model, loss, run_config)
    )
    if cfg.ckpt_path == "last":  # the run continues in its own folder: and in its own W&B run
        continue_wandb_run(cfg.get("logger"), out)
    loggers = build_loggers(cfg.get("logger"), out)
    if not loggers:  # Lightning refuses a learning-rate monitor without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = hydra.utils.instantiate(
        cfg.trainer, **injections.trainer_kwargs(cfg, loggers, callbacks, out)
    )
    with redacted_argv():  # the first log starts the W&B run, which records the command line
        log_run_header(loggers, run_config, summary)
    redact_console_until_finish()  # after W&B's console capture, so that it sees redacted text

    trainable = getattr(model, "trainable", True)
    if trainable:
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.ckpt_path, out, module)
        )
        ckpt = tested_checkpoint(cfg.test_checkpoint, trainer.checkpoint_callback)
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        score = validation_score(trainer.checkpoint_callback)
    else:
        validated = trainer.validate(module, datamodule=datamodule)
        score = finite_or_none(validated[0].get("val/sr_psnr") if validated else None)
        trainer.test(module, datamodule=datamodule)
    save_examples(module.example_images, out / "examples.npz")
    # every test volume's scores, which `cmfnet report` pairs across methods
    write_text_atomic(
        out / VOLUME_SCORES_FILE, volume_scores_csv(module.volume_scores.get("test", {}))
    )
    tested = module.results.get("test", {})
    # volumes whose scored target's max is not the advance data range (a clamping scoring)
    recorded = METRIC_KEYS + tuple(f"{out}_max_mismatches" for out in OUTPUTS)
    metrics = {**identity, **{k: tested.get(k) for k in recorded}}
    if tested.get("scorings"):  # module.also_score: the same test set in further scorings
        metrics["scorings"] = {
            name: {k: scores.get(k) for k in recorded}
            for name, scores in tested["scorings"].items()
        }
    metrics["precision"] = str(cfg.trainer.precision)  # as config.yaml records it
    metrics["params"] = summary.total_params
    metrics["wandb_run_id"] = next(
        (lg.experiment.id for lg in loggers if hasattr(lg.experiment, "id")), None
    )
    metrics["skipped_batches"] = module.skipped_batches
    metrics.update(startup_times(callbacks))
    return metrics, score


def finite_or_none(value: Any) -> Optional[float]:
    """``value`` (a number or a one-element tensor) as a float; None when missing or not
    finite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def validation_score(callback: Optional[ModelCheckpoint]) -> Optional[float]:
    """The best validation SR PSNR of the fit: the score ``ModelCheckpoint`` keeps for its best
    checkpoint (restored with it when a run resumes). None without that callback, or when no
    epoch gave a finite score (a diverged run)."""
    return finite_or_none(callback.best_model_score if callback is not None else None)


def job_record(
    cfg: DictConfig, err: BaseException, out: Path, stop: Optional[BaseException]
) -> dict:
    """metrics.json of a job that did not complete: ``failed`` with the one-line error (the
    traceback goes to error.log), or ``interrupted`` by a stop signal
    (:func:`cmfnet.sweeps.rerun.interrupted_record`); with the run's identity where the config
    gives it."""
    if stop is None:
        record = {"status": "failed", "error": one_line(err)}
        (out / "error.log").write_text("".join(traceback.format_exception(err)))
    else:
        record = interrupted_record(out, stop, HydraConfig.get().overrides.task)
    try:
        record.update(run_identity(cfg))
    except Exception:
        pass
    return record


def run_task(cfg: DictConfig) -> Optional[float]:
    """Hydra task: train, write ``metrics.json`` atomically with a status, and close W&B.

    A failing job records ``status: failed`` with the error and, inside a multirun, lets the
    other jobs go on; a single run prints the one-line error and exits with status 1. SIGINT or
    SIGTERM (:mod:`cmfnet.runs.signals`) records ``status: interrupted``, keeps the epoch-end
    ``checkpoints/last.ckpt`` (resuming from it is deterministic) and ends the process, and so
    the sweep, with status 130 or 143. A requeued submitit job continues from its last.ckpt
    (:func:`cmfnet.sweeps.rerun.resume_requeued_job`). Returns the best validation SR PSNR (what
    ModelCheckpoint monitors; an optimising sweeper maximises it, ``hparams_search``), or None
    for a failed job or one with no finite score, which the Optuna sweeper records as a failed
    trial. While the job runs, logs are written from a thread of their own
    (:mod:`cmfnet.runs.queued_logging`), so a signal handler that logs cannot break a write.
    """
    out = output_dir()
    failure: Optional[BaseException] = None
    score: Optional[float] = None
    stop: Optional[BaseException] = None
    with signals.stop_on_signals(), queued_logging():
        try:
            resume_requeued_job(cfg, out, HydraConfig.get().overrides.task)
            metrics, score = train(cfg)
            metrics["status"] = "completed"
        except BaseException as err:  # recorded below, a stop signal's exit included
            failure = err
        with (
            signals.deferred()
        ):  # a signal from here on stops the process once the record is written
            if failure is not None:
                stop = signals.stop_exception(failure)
                if stop is None and not isinstance(failure, Exception):
                    finish_wandb()
                    raise failure  # an exit of its own, not a stop signal: no record, as before
                metrics = job_record(cfg, failure, out, stop)
                if stop is None:
                    log.error(
                        "job failed: %s (traceback in %s)", metrics["error"], out / "error.log"
                    )
                else:
                    log.warning("job interrupted: %s", metrics["error"])
            finish_wandb()
            write_json_atomic(out / "metrics.json", metrics)
    if stop is not None:
        signals.requeue_if_timed_out()
        if not is_multirun():
            print(
                f"interrupted: {metrics['error']}; "
                f"resume: the same command with hydra.run.dir={out} "
                "ckpt_path=last",
                file=sys.stderr,
            )
        raise stop
    if failure is not None and not is_multirun():
        print(f"error: {metrics['error']}", file=sys.stderr)
        raise SystemExit(1)
    if failure is None:
        print(outputs_summary(out, metrics), flush=True)
    return score


def outputs_summary(out: Path, metrics: dict) -> str:
    """Where a finished run's outputs are: its folder, metrics.json (with the test SR scores),
    the example images, the offline W&B run and the line that uploads it."""

    def score(key: str) -> str:
        value = metrics.get(key)
        return f"{value:.{metric_digits(key)}f}" if isinstance(value, float) else "-"

    lines = [
        f"run folder: {out}",
        f"  metrics:  {out / 'metrics.json'} (test SR PSNR {score('sr_psnr')} dB, "
        f"SSIM {score('sr_ssim')}, scoring {metrics.get('scoring', 'fastmri')})",
    ]
    images = sorted((out / "images").glob("*.png"))
    if images:
        lines.append(f"  images:   {', '.join(str(p) for p in images)}")
    if (out / "checkpoints").is_dir():
        lines.append(f"  checkpoints: {out / 'checkpoints'}")
    offline = sorted((out / "wandb").glob("offline-run-*"))
    if offline:
        lines.append(f"  W&B run (offline): {offline[-1]}")
        lines.append(f"  upload it with:    wandb sync {offline[-1]}")
    return "\n".join(lines)
