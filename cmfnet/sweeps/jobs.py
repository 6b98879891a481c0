"""A sweep's job list (``.cmfnet_jobs.json``): each job's number, folder and overrides, worked out
as Hydra's basic sweeper does, written when the multirun starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig, open_dict

from cmfnet.runs.io import write_json_atomic

#: The sweep's job list, written when the multirun starts (see :func:`write_job_list`).
JOB_LIST = ".cmfnet_jobs.json"


NOT_STARTED = "not started"


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def planned_jobs(config: DictConfig) -> list[dict]:
    """Every job of the multirun ``config`` as ``{"num", "dir", "overrides"}`` in launch order,
    worked out as Hydra's basic sweeper does (its ``params``, then the command line's
    overrides), each folder from ``hydra.sweep.subdir``. Another sweeper picks its jobs as it
    goes: ValueError."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != BASIC_SWEEPER:
        raise ValueError(f"hydra.sweeper {sweeper.get('_target_')} picks its jobs as it goes")
    loader = GlobalHydra.instance().config_loader()
    arguments = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    arguments += [str(o) for o in config.hydra.overrides.task]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(parsed, sweeper.get("max_batch_size"))
    jobs = []
    for num, overrides in enumerate(job for batch in batches for job in batch):
        job_config = loader.load_sweep_config(config, list(overrides))
        with open_dict(job_config):
            job_config.hydra.job.num = num
            job_config.hydra.job.id = num
        jobs.append(
            {"num": num, "dir": str(job_config.hydra.sweep.subdir), "overrides": list(overrides)}
        )
    return jobs


def write_job_list(sweep_dir: Path, config: DictConfig) -> None:
    """Write ``<sweep_dir>/.cmfnet_jobs.json``: the working folder and :func:`planned_jobs`."""
    write_json_atomic(
        Path(sweep_dir) / JOB_LIST, {"cwd": os.getcwd(), "jobs": planned_jobs(config)}
    )


def read_job_list(sweep_dir: Path) -> dict:
    """A sweep's job list as ``{"cwd": str or None, "jobs": [...]}``; empty when the sweep has
    none (another sweeper, or a sweep started before the list existed) or it is unreadable."""
    try:
        record = json.loads((Path(sweep_dir) / JOB_LIST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"cwd": None, "jobs": []}
    record = record if isinstance(record, dict) else {}
    jobs = [
        job
        for job in record.get("jobs") or []
        if isinstance(job, dict)
        and isinstance(job.get("dir"), str)
        and isinstance(job.get("overrides"), list)
    ]
    return {"cwd": record.get("cwd") if isinstance(record.get("cwd"), str) else None, "jobs": jobs}
