"""The training task: compose objects from the config, fit, test, and write metrics.json.

``run.py`` is a thin Hydra entry point over :func:`run_task`. Every object is built with
``hydra.utils.instantiate`` from its config group; nothing a researcher would sweep is a
constant here.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Optional

import hydra
import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from cmfnet.checkpoint import mismatch_summary
from cmfnet.config import (is_int, is_number, redacted_argv, register_resolvers, sanitize_config,
                           shrink_config)
from cmfnet.data.errors import DataError
from cmfnet.data.synth_cache import synthetic_record
from cmfnet.data.paired import worker_error_message
from cmfnet.io import write_json_atomic
from cmfnet.lit.datamodule import datamodule_from_config
from cmfnet.models import build_model
from cmfnet.models.summary import format_summary, model_summary
from cmfnet.performance import apply_performance
from cmfnet.quiet import silence_third_party_noise

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
TEST_CHECKPOINTS = ("best", "last")
WANDB_MODES = ("offline", "online", "disabled", "shared", "dryrun", "run")  # what wandb accepts

register_resolvers()
silence_third_party_noise()

METRIC_KEYS = [f"{out}_{m}{suffix}" for out in ("sr", "rec") for m in ("psnr", "ssim", "nmse") for suffix in ("", "_std")]


def output_dir() -> Path:
    """This job's output folder (Hydra's run or sweep sub-folder)."""
    return Path(HydraConfig.get().runtime.output_dir)


def is_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def run_identity(cfg: DictConfig) -> dict:
    """What identifies a run in tables and W&B: model, scale, accel, mask, data, seed, scoring."""
    choices = HydraConfig.get().runtime.choices
    return {
        "model": choices.get("model", "model"),
        "scale": int(cfg.scale),
        "accel": int(cfg.accel) if float(cfg.accel).is_integer() else float(cfg.accel),
        "mask": choices.get("mask", "mask"),
        "data": data_read(cfg, choices.get("data", "data")),
        "seed": int(cfg.seed),
        "scoring": OmegaConf.select(cfg, "scoring.name", default="fastmri"),
    }


def data_read(cfg: DictConfig, choice: str) -> str:
    """The data a run reads, as recorded in metrics.json, W&B and tables: ``synthetic`` for a
    folder that ``cmfnet synth`` (or the cache) wrote, whichever ``data=`` option reads it."""
    root = OmegaConf.select(cfg, "data.root", throw_on_missing=False)
    return "synthetic" if isinstance(root, str) and synthetic_record(Path(root)) else choice


def named_run_config(cfg: DictConfig, identity: dict) -> DictConfig:
    """``cfg`` with each W&B logger's unset ``name``, ``group`` and ``tags`` filled in: the run
    name from the identity, the sweep-wide group ``<sweep>/<timestamp>_<pid>`` inside a multirun,
    and ``key=value`` tags of the identity after any configured tags. The saved config.yaml then
    records exactly what W&B is given."""
    cfg = copy.deepcopy(cfg)
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    with open_dict(cfg):
        for logger_cfg in (cfg.get("logger") or {}).values():
            if "wandb" not in str(logger_cfg.get("_target_", "")).lower():
                continue
            logger_cfg.name = logger_cfg.get("name") or (
                f"{identity['model']}-x{identity['scale']}-r{identity['accel']}-{identity['mask']}-s{identity['seed']}")
            logger_cfg.group = logger_cfg.get("group") or (
                f"{sweep_dir.parent.name}/{sweep_dir.name}" if is_multirun() else None)
            logger_cfg.tags = list(logger_cfg.get("tags") or []) + [f"{k}={v}" for k, v in identity.items()]
    return cfg


def build_loggers(cfg: DictConfig, out: Path) -> list:
    """Instantiate the ``logger`` group; W&B keeps its files in the run folder, offline unless
    its ``mode`` says otherwise."""
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if "wandb" in str(logger_cfg.get("_target_", "")).lower():
            if logger_cfg.get("mode") not in WANDB_MODES:
                raise ValueError(f"logger.{name}.mode: {logger_cfg.get('mode')!r} is not one of {', '.join(WANDB_MODES)} "
                                 "(it follows WANDB_MODE unless given)")
            os.environ.setdefault("WANDB_DIR", str(out))
            os.environ.setdefault("WANDB_CACHE_DIR", str(out / "wandb" / "cache"))
            os.environ.setdefault("WANDB_CONFIG_DIR", str(out / "wandb" / "config"))
            os.environ.setdefault("WANDB_DATA_DIR", str(out / "wandb" / "data"))
            os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(hydra.utils.instantiate(logger_cfg))
    return loggers


def resolve_ckpt_path(ckpt_path: Optional[str], out: Path, module: torch.nn.Module) -> Optional[str]:
    """``last`` means this run folder's ``checkpoints/last.ckpt``; a path must exist, be a
    complete checkpoint (a torch zip archive whose members pass their CRC check) and hold
    weights that fit ``module`` (the run's configured network)."""
    if ckpt_path in (None, ""):
        return None
    path = out / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no checkpoint at {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"ckpt_path={ckpt_path}: {path} is truncated or not a checkpoint ({err})") from err
    if broken is not None:
        raise DataError(f"ckpt_path={ckpt_path}: {path} is corrupted ({broken} fails its CRC check)")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("state_dict", {})
    except Exception:  # e.g. pickled objects of an older Lightning: Lightning's own loading decides
        return str(path)
    expected = module.state_dict()
    if set(weights) != set(expected) or any(weights[k].shape != expected[k].shape for k in expected):
        raise DataError(f"ckpt_path={ckpt_path}: {path} does not fit this run's model "
                        f"({type(module.model).__name__}): {mismatch_summary(module, weights)}")
    return str(path)


#: Settings checked before anything is built: (key, test, what the key must be).
SETTING_CHECKS = (
    ("seed", lambda v: is_int(v) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
    ("scale", is_int, "an integer"),
    ("accel", lambda v: is_number(v) and v > 1, "a finite number > 1"),
    ("summary_input_hw", lambda v: len(v) == 2 and all(is_int(x) and x >= 1 for x in v), "two positive integers"),
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


def train(cfg: DictConfig) -> dict:
    """Fit (unless the model has no parameters to train), test, and return the metrics."""
    job_started_at = time.time()
    out = output_dir()
    check_settings(cfg)
    cfg = shrink_config(cfg, HydraConfig.get().overrides.task if HydraConfig.initialized() else ())
    identity = run_identity(cfg)
    cfg = named_run_config(cfg, identity)
    L.seed_everything(cfg.seed, workers=True)
    run_config = sanitize_config(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.save(OmegaConf.create(run_config), out / "config.yaml")

    datamodule = datamodule_from_config(cfg)
    model = build_model(cfg.model)
    summary = model_summary(model, input_hw=tuple(cfg.summary_input_hw), scale=cfg.scale)
    log.info("model summary\n%s", format_summary(summary))
    model = apply_performance(model, **cfg.performance)
    loss = hydra.utils.instantiate(cfg.loss)
    module = hydra.utils.instantiate(cfg.module, model=model, loss=loss)
    module.job_started_at = job_started_at

    module.run_config = run_config
    loggers = build_loggers(cfg, out)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if not loggers:  # Lightning refuses a learning-rate monitor without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(out))
    with redacted_argv():  # the first log starts the W&B run, which records the command line
        log_run_header(loggers, module.run_config, summary)

    trainable = getattr(model, "trainable", True)
    if trainable:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.ckpt_path, out, module))
        ckpt = tested_checkpoint(cfg.test_checkpoint, trainer.checkpoint_callback)
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    else:
        trainer.validate(module, datamodule=datamodule)
        trainer.test(module, datamodule=datamodule)
    save_examples(module.example_images, out / "examples.npz")
    metrics = {**identity, **{k: module.results.get("test", {}).get(k) for k in METRIC_KEYS}}
    metrics["params"] = summary.total_params
    metrics["wandb_run_id"] = next((lg.experiment.id for lg in loggers if hasattr(lg.experiment, "id")), None)
    metrics["skipped_batches"] = module.skipped_batches
    metrics.update(module.startup_times())
    return metrics


def log_run_header(loggers: list, run_config: dict, summary) -> None:
    """Log the (sanitized) run config and the model summary to every logger; W&B also gets the
    parameters and MACs per block as a table."""
    for logger in loggers:
        logger.log_hyperparams(run_config)
        logger.log_hyperparams({"model_summary/params": summary.total_params, "model_summary/macs": summary.macs})
        if hasattr(logger, "log_table"):
            rows = [[b.name, b.type, b.params, b.macs] for b in summary.blocks]
            logger.log_table(key="model_summary", columns=["block", "type", "params", "macs"], data=rows)


def save_examples(examples: list[dict], path: Path) -> None:
    """Save the kept test slices (de-normalised outputs and targets, normalised inputs) for
    figures across runs: arrays ``{key}_{i}`` plus ``fname_{i}`` and ``slice_idx_{i}``."""
    arrays = {}
    for i, example in enumerate(examples):
        for key, value in example.items():
            arrays[f"{key}_{i}"] = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    np.savez_compressed(path, count=len(examples), **arrays)


def finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun opens its own."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
            wandb.teardown()  # flush the run's files before the next job or the process exit


def raised_by_cmfnet(err: BaseException) -> bool:
    """Whether ``err`` is a built-in or cmfnet error raised by this package's code (its message
    then names the file or setting), not a library's, nor a library's re-raise (OmegaConf gives
    its own errors the traceback of the error they wrap)."""
    if type(err).__module__.split(".")[0] not in ("builtins", "cmfnet"):
        return False
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)


def one_line_error(err: BaseException) -> str:
    """The error as one line: the first DataError's message (it names the file), else the
    outermost message raised by cmfnet's own code (it wraps a library's error with the setting
    or file), else the root cause's (as raised, also when a DataLoader worker raised it),
    prefixed by the config key if known."""
    chain = [err]
    while (chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    cause = next((e for e in chain if isinstance(e, DataError)), None) or next(
        (e for e in chain if raised_by_cmfnet(e)), chain[-1])
    lines = worker_error_message(str(cause)).strip().splitlines() or [type(cause).__name__]
    key = getattr(err, "full_key", None)
    return f"{key}: {lines[0]}" if key else lines[0]


def stop_exception(err: BaseException) -> Optional[BaseException]:
    """What ends the process after ``err`` ended a job because a stop signal arrived: ``err``
    itself when it carries an exit status (:class:`cmfnet.signals.Interrupted`; submitit's exit
    after requeueing the job), else ``Interrupted`` for the signal (e.g. after Lightning's own
    SIGTERM exit, or a DataLoader worker killed by the same signal); None when no stop signal
    arrived (the job failed on its own)."""
    import signal

    from cmfnet import signals

    if isinstance(err, signals.Interrupted):
        return err
    signum = signals.received()
    if signum is None and isinstance(err, KeyboardInterrupt):
        signum = signal.SIGINT
    if signum is None:
        return None
    if isinstance(err, SystemExit) and err.code not in (None, 0):
        return err
    return signals.Interrupted(signum)


def job_record(cfg: DictConfig, err: BaseException, out: Path, stop: Optional[BaseException]) -> dict:
    """metrics.json of a job that did not complete: ``failed`` with the one-line error (the
    traceback goes to error.log), or ``interrupted`` by a stop signal with the checkpoint it can
    continue from and the job's overrides (a requeued job recognises its own record by them)."""
    import signal

    from cmfnet import signals

    if stop is None:
        record = {"status": "failed", "error": one_line_error(err)}
        (out / "error.log").write_text("".join(traceback.format_exception(err)))
    else:
        name = signals.signal_name(getattr(stop, "signum", None) or signals.received() or signal.SIGINT)
        last = out / "checkpoints" / "last.ckpt"
        checkpoint = str(last.relative_to(out)) if last.is_file() else None
        where = f"last epoch-end checkpoint: {checkpoint}" if checkpoint else "before its first checkpoint"
        record = {"status": "interrupted", "error": f"stopped by {name} ({where})", "signal": name,
                  "checkpoint": checkpoint, "overrides": list(HydraConfig.get().overrides.task)}
    try:
        record.update(run_identity(cfg))
    except Exception:
        pass
    return record


def resume_requeued_job(cfg: DictConfig, out: Path) -> None:
    """Set ``ckpt_path=last`` for a submitit job requeued after a time-out or pre-emption, so that
    it continues from its own ``checkpoints/last.ckpt``: only inside a submitit job, with no
    ckpt_path given, when this folder's metrics.json records this very job (the same overrides)
    as interrupted. A fresh run never picks up a checkpoint on its own."""
    import json

    if cfg.get("ckpt_path") not in (None, "") or "SUBMITIT_FOLDER" not in os.environ:
        return
    last = out / "checkpoints" / "last.ckpt"
    try:
        record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return
    if not (isinstance(record, dict) and record.get("status") == "interrupted" and last.is_file()):
        return
    if record.get("overrides") != list(HydraConfig.get().overrides.task):
        return
    log.info("requeued job: continuing from %s", last)
    cfg.ckpt_path = "last"


def run_task(cfg: DictConfig) -> Optional[float]:
    """Hydra task: train, write ``metrics.json`` atomically with a status, and close W&B.

    A failing job records ``status: failed`` with the error and, inside a multirun, lets the
    other jobs go on; a single run prints the one-line error and exits with status 1. SIGINT or
    SIGTERM (:mod:`cmfnet.signals`) records ``status: interrupted``, keeps the epoch-end
    ``checkpoints/last.ckpt`` (resuming from it is deterministic) and ends the process, and so
    the sweep, with status 130 or 143. A requeued submitit job continues from its last.ckpt
    (:func:`resume_requeued_job`). Returns the test SR PSNR (for sweepers that optimise).
    """
    from cmfnet import signals

    out = output_dir()
    failure: Optional[BaseException] = None
    stop: Optional[BaseException] = None
    with signals.stop_on_signals():
        try:
            resume_requeued_job(cfg, out)
            metrics = {**train(cfg), "status": "completed"}
        except BaseException as err:  # recorded below, a stop signal's exit included
            failure = err
        with signals.deferred():  # a signal from here on stops the process once the record is written
            if failure is not None:
                stop = stop_exception(failure)
                if stop is None and not isinstance(failure, Exception):
                    finish_wandb()
                    raise failure  # an exit of its own, not a stop signal: no record, as before
                metrics = job_record(cfg, failure, out, stop)
                if stop is None:
                    log.error("job failed: %s (traceback in %s)", metrics["error"], out / "error.log")
                else:
                    log.warning("job interrupted: %s", metrics["error"])
            finish_wandb()
            write_json_atomic(out / "metrics.json", metrics)
    if stop is not None:
        if not is_multirun():
            print(f"interrupted: {metrics['error']}; resume: the same command with hydra.run.dir={out} "
                  "ckpt_path=last", file=sys.stderr)
        raise stop
    if failure is not None and not is_multirun():
        print(f"error: {metrics['error']}", file=sys.stderr)
        raise SystemExit(1)
    if failure is None:
        print(outputs_summary(out, metrics), flush=True)
    return metrics.get("sr_psnr")


def outputs_summary(out: Path, metrics: dict) -> str:
    """Where a finished run's outputs are: its folder, metrics.json (with the test SR scores),
    the example images, the offline W&B run and the line that uploads it."""
    def score(key: str, digits: int) -> str:
        value = metrics.get(key)
        return f"{value:.{digits}f}" if isinstance(value, float) else "-"

    lines = [f"run folder: {out}",
             f"  metrics:  {out / 'metrics.json'} (test SR PSNR {score('sr_psnr', 2)} dB, "
             f"SSIM {score('sr_ssim', 4)}, scoring {metrics.get('scoring', 'fastmri')})"]
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
