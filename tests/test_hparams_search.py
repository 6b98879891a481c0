"""Hyperparameter search (``hparams_search=cmfnet_lr``, Optuna's TPE through hydra-optuna-sweeper):
a search stopped by SIGTERM continues with the same SQLite study, each trial's value is the job's
best validation SR PSNR, ``cmfnet report`` plots the trials; the gpus launcher runs a batch."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import REPO

from cmfnet.commands.report.cli import build_report
from cmfnet.lit.history import read_history

pytestmark = pytest.mark.slow

SEARCH = (
    "hparams_search=cmfnet_lr",
    "experiment=smoke",
    "trainer.max_epochs=1",
    "logger=none",
    "hydra.sweep.dir=search",
    "hydra.sweeper.n_trials=3",
)


def start(cwd: Path, *args: str) -> subprocess.Popen:
    """``python run.py ARGS`` in ``cwd``, its output into ``cwd/search.log``."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
        "CMFNET_CACHE_DIR": str(cwd.parent / "shared-cache"),
        "OMP_NUM_THREADS": "1",
    }
    with open(cwd / "search.log", "a") as output:
        return subprocess.Popen(
            [sys.executable, str(REPO / "run.py"), *args],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def log_tail(cwd: Path) -> str:
    return (cwd / "search.log").read_text()[-3000:]


def trial_states(db: Path) -> list[str]:
    """The trials' states in the study file, read-only; none while the sweep is creating it."""
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            query = "SELECT state FROM trials ORDER BY number"
            return [row[0] for row in connection.execute(query)]
    except sqlite3.OperationalError:  # no tables yet, or locked by a write in progress
        return []


def wait_until(proc: subprocess.Popen, cwd: Path, ready, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} never happened (exit {proc.poll()}): {log_tail(cwd)}")


def the_study(sweep: Path) -> optuna.study.Study:
    """The only study in the search folder's optuna.db."""
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    summaries = optuna.get_all_study_summaries(storage)
    assert [s.study_name for s in summaries] == ["cmfnet_lr"]
    return optuna.load_study(study_name="cmfnet_lr", storage=storage)


def job_of(sweep: Path, params: dict) -> Path:
    """The job folder whose recorded overrides are the trial's ``params``."""
    wanted = {f"{name}={value}" for name, value in params.items()}
    import yaml

    jobs = [
        job
        for job in sweep.iterdir()
        if (job / ".hydra" / "overrides.yaml").is_file()
        and wanted <= set(yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
    ]
    assert len(jobs) == 1, (params, jobs)
    return jobs[0]


def assert_values_are_best_validation_psnr(sweep: Path, trials: list) -> None:
    """Each completed trial's value is its job's best val/sr_psnr (history.csv) and the job
    completed."""
    for trial in trials:
        job = job_of(sweep, trial.params)
        assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
        best = max(row["val/sr_psnr"] for row in read_history(job / "history.csv"))
        assert trial.value == pytest.approx(best, rel=1e-6)


def test_a_search_stopped_by_sigterm_continues_with_the_same_study(tmp_path):
    sweep, db = tmp_path / "search", tmp_path / "search" / "optuna.db"
    proc = start(tmp_path, *SEARCH)
    # Stop once trial 0 is told to the study and trial 1's job is training (its config.yaml).
    wait_until(proc, tmp_path, lambda: trial_states(db)[:1] == ["COMPLETE"], "a finished trial")
    wait_until(
        proc, tmp_path, lambda: len(list(sweep.glob("*/config.yaml"))) == 2, "trial 1's start"
    )
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 143, log_tail(tmp_path)
    assert "continue it with: the same command" in log_tail(tmp_path)
    first = the_study(sweep).trials
    assert [t.state.name for t in first] == ["COMPLETE", "RUNNING"], log_tail(tmp_path)
    stopped = json.loads((job_of(sweep, first[1].params) / "metrics.json").read_text())
    assert (stopped["status"], stopped["signal"]) == ("interrupted", "SIGTERM")

    proc = start(tmp_path, *SEARCH)  # the same command
    proc.wait(timeout=400)
    assert proc.returncode == 0, log_tail(tmp_path)
    trials = the_study(sweep).trials
    # The same study: trial 0 with its parameters and value, the stopped trial 1 (left running:
    # nothing told it), then the 3 trials of this command numbered after them.
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert (trials[0].params, trials[0].value) == (first[0].params, first[0].value)
    assert [t.state.name for t in trials] == ["COMPLETE", "RUNNING"] + ["COMPLETE"] * 3
    done = [trials[0], *trials[2:]]
    assert_values_are_best_validation_psnr(sweep, done)
    assert all(1e-5 <= t.params["optimizer.lr"] <= 1e-2 for t in done)

    written = build_report([sweep], sweep)
    assert len(written["report"].runs) == 4  # the completed trials; the stopped one is failed
    assert (sweep / "search_cmfnet_lr.png").stat().st_size > 10_000
    assert "`search_cmfnet_lr.png`" in written["markdown"].read_text()


def test_the_gpus_launcher_runs_a_batch_and_a_failed_trial_is_recorded_as_failed(tmp_path):
    # The sampler's seed 0 draws lr -1 (refused by the settings check: the job fails), then 1e-3.
    proc = start(
        tmp_path,
        *SEARCH[:-1],
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.seed=0",
        "optimizer.lr=choice(-1.0,0.001)",
        "launcher=gpus",
        "hydra.launcher.devices=cpu",
        "hydra.launcher.cpu_workers=2",
    )
    proc.wait(timeout=300)
    assert proc.returncode == 0, log_tail(tmp_path)
    assert "GPU pool launcher: 2 jobs on 2 slot(s)" in (tmp_path / "search.log").read_text()
    trials = the_study(tmp_path / "search").trials
    states = [(t.state.name, t.params["optimizer.lr"]) for t in trials]
    assert states == [("FAIL", -1.0), ("COMPLETE", 0.001)]
    failed = json.loads(
        (job_of(tmp_path / "search", trials[0].params) / "metrics.json").read_text()
    )
    assert failed["status"] == "failed" and "optimizer.lr must be" in failed["error"]
    assert_values_are_best_validation_psnr(tmp_path / "search", trials[1:])
