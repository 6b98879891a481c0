"""A sweep stops when told to (SIGINT, SIGTERM) and `cmfnet resume` finishes it; a requeued
submitit job continues from its last.ckpt. docs/reliability.md lists each fault and its test."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, descendant_pids, pid_alive
from helpers.signalled_file import SignalledFile, handler_into

from cmfnet.lit.history import read_history
from cmfnet.runs import signals
from cmfnet.sweeps.jobs import JOB_LIST
from cmfnet.sweeps.results import collect_results, write_results
from cmfnet.sweeps.resume import resume_plan, set_aside_stale_files

# Three epochs: a job stopped after its first last.ckpt still has epochs to train when resumed.
SMOKE = ("experiment=smoke", "logger=csv", "trainer.max_epochs=3")
GRID = ("scale=2,4", "accel=4,8")
METRICS = [
    f"{out}_{m}{std}"
    for out in ("sr", "rec")
    for m in ("psnr", "ssim", "nmse")
    for std in ("", "_std")
]


def env_for(cwd: Path) -> dict:
    """The environment of a run: the shared synthetic-data cache, one thread, no W&B setting."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**base, "CMFNET_CACHE_DIR": str(cwd.parent / "shared-cache"), "OMP_NUM_THREADS": "1"}


def start_sweep(cwd: Path, sweep: str, *args: str) -> subprocess.Popen:
    """``python run.py -m ARGS`` into ``cwd/sweep``; its output goes to ``cwd/sweep.log``."""
    command = [sys.executable, str(REPO / "run.py"), "-m", *args, f"hydra.sweep.dir={sweep}"]
    with open(cwd / f"{sweep}.log", "w") as output:
        return subprocess.Popen(
            command, cwd=cwd, env=env_for(cwd), stdout=output, stderr=subprocess.STDOUT
        )


def output_of(proc: subprocess.Popen) -> str:
    """The name of the sweep's output file (see :func:`start_sweep`)."""
    return proc.args[-1].split("=", 1)[1] + ".log"


def finish(proc: subprocess.Popen, cwd: Path, timeout: float = 600) -> str:
    """Wait for the sweep; the end of its output."""
    proc.wait(timeout=timeout)
    return (cwd / output_of(proc)).read_text()[-3000:]


def wait_for(proc: subprocess.Popen, pattern: str, cwd: Path, timeout: float = 240) -> Path:
    """The first path matching ``pattern`` under ``cwd``, once it exists (the run must go on)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        found = sorted(cwd.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"{pattern} never appeared (exit {proc.poll()}): {finish(proc, cwd)}")


def stop(proc: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` and wait for the process to end (a sweep that does not stop fails the
    test by the timeout, however loaded the machine: the job stops mid-epoch, and the statuses
    show that no later job started)."""
    proc.send_signal(signum)
    proc.wait(timeout=120)


def statuses(sweep: Path) -> list[str]:
    rows = sorted(collect_results(sweep), key=lambda row: int(row["job"].split("_")[0]))
    return [row["status"] for row in rows]


def metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The 2x2 smoke sweep run without interruption."""
    cwd = tmp_path_factory.mktemp("reference")
    proc = start_sweep(cwd, "full", *SMOKE, *GRID)
    output = finish(proc, cwd)
    assert proc.returncode == 0, output
    assert statuses(cwd / "full") == ["completed"] * 4
    return cwd / "full"


# --------------------------------------------------------------------------------------------
# Stopping a sweep and resuming it
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_stops_the_sweep_and_resume_gives_the_uninterrupted_metrics(tmp_path, reference):
    proc = start_sweep(tmp_path, "stopped", *SMOKE, *GRID)
    last = wait_for(proc, "stopped/1_*/checkpoints/last.ckpt", tmp_path)
    stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, proc.returncode
    sweep = tmp_path / "stopped"
    assert statuses(sweep) == ["completed", "interrupted", "not started", "not started"]
    assert (sweep / "results.csv").read_text().count(",not started,") == 2
    table = (sweep / "results.md").read_text()
    assert table.count("| not started |") == 2 and "| interrupted |" in table
    record = metrics(last.parents[1])
    assert (record["signal"], record["checkpoint"], record["scale"], record["accel"]) == (
        "SIGTERM",
        "checkpoints/last.ckpt",
        2,
        8,
    )
    assert (
        torch.load(last, map_location="cpu", weights_only=True)["epoch"] < 2
    )  # epochs left to train

    resume = subprocess.run(
        [sys.executable, "-m", "cmfnet.cli", "resume", str(sweep)],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert "continues from checkpoints/last.ckpt" in resume.stdout
    assert f"Restored all states from the checkpoint at {last}" in resume.stdout + resume.stderr
    assert statuses(sweep) == ["completed"] * 4
    for job in sorted(p for p in reference.iterdir() if p.is_dir() and not p.name.startswith(".")):
        resumed, expected = metrics(sweep / job.name), metrics(job)
        assert {k: resumed[k] for k in METRICS} == {k: expected[k] for k in METRICS}, job.name
    assert [row["epoch"] for row in read_history(last.parents[1] / "history.csv")] == [0, 1, 2]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigint_stops_a_sweep_with_130_and_sigterm_stops_its_resume_with_143(tmp_path):
    # Eight epochs: the resumed job is still training when the resume is stopped.
    proc = start_sweep(tmp_path, "stopped", *SMOKE[:2], "trainer.max_epochs=8", "scale=2,4")
    wait_for(proc, "stopped/0_*/checkpoints/last.ckpt", tmp_path)
    stop(proc, signal.SIGINT)
    assert proc.returncode == 130, proc.returncode
    sweep = tmp_path / "stopped"
    assert statuses(sweep) == ["interrupted", "not started"]
    assert json.loads((sweep / JOB_LIST).read_text())["cwd"] == str(tmp_path)
    resume = [sys.executable, "-m", "cmfnet.cli", "resume", str(sweep)]
    dry = subprocess.run(
        [*resume, "--dry-run"],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    commands = [line for line in dry.stdout.splitlines() if "run.py" in line]
    assert (
        len(commands) == 2
        and commands[0].endswith("ckpt_path=last")
        and "ckpt_path" not in commands[1]
    )
    assert "scale=4" in commands[1] and "hydra.mode=RUN" in commands[1]
    assert statuses(sweep) == ["interrupted", "not started"]  # a dry run runs nothing

    history = next(sweep.glob("0_*")) / "history.csv"
    trained = len(read_history(history))
    with open(tmp_path / "resume.log", "w") as output:
        proc = subprocess.Popen(
            resume, cwd=tmp_path, env=env_for(tmp_path), stdout=output, stderr=subprocess.STDOUT
        )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(read_history(history)) <= trained:
        time.sleep(0.05)
    assert len(read_history(history)) > trained, (tmp_path / "resume.log").read_text()[-2000:]
    job = descendant_pids(proc.pid)
    stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, proc.returncode
    assert job and not [pid for pid in job if pid_alive(pid)], (
        "the job kept running after the resume stopped"
    )
    assert statuses(sweep) == ["interrupted", "not started"]
    assert metrics(history.parent)["signal"] == "SIGTERM"
    assert "0 of 2 jobs completed" in (tmp_path / "resume.log").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigterm_stops_the_gpus_launcher_and_leaves_no_worker(tmp_path):
    # One CPU worker: the job order is fixed, and the next job is already queued to that worker.
    proc = start_sweep(
        tmp_path, "stopped", "launcher=gpus", "hydra.launcher.cpu_workers=1", *SMOKE, *GRID
    )
    wait_for(proc, "stopped/1_*/checkpoints/last.ckpt", tmp_path)
    workers = descendant_pids(proc.pid)
    assert workers
    stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, proc.returncode
    deadline = time.time() + 10
    while time.time() < deadline and any(pid_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not [pid for pid in workers if pid_alive(pid)], (
        "workers kept running after the sweep stopped"
    )
    assert statuses(tmp_path / "stopped") == [
        "completed",
        "interrupted",
        "not started",
        "not started",
    ]


def _submitit_tasks(pid: int) -> list[int]:
    """The submitit task processes (``python -m submitit.core._submit``) below ``pid``."""
    tasks = []
    for child in descendant_pids(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"submitit.core._submit" in command:
            tasks.append(child)
    return tasks


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_submitit_job_requeued_on_its_time_out_signal_continues_from_last_ckpt(
    tmp_path, reference
):
    """submitit's local executor is the SLURM launcher's code path: the task gets submitit's
    time-out/pre-emption signal (what ``job._interrupt()`` sends), submitit requeues it, and the
    requeued job resumes from its own last.ckpt to the metrics of an uninterrupted run."""
    proc = start_sweep(tmp_path, "sweep", "launcher=submitit_local", *SMOKE, "scale=2", "accel=4")
    last = wait_for(proc, "sweep/0_*/checkpoints/last.ckpt", tmp_path)
    (task,) = _submitit_tasks(proc.pid)
    os.kill(task, signal.SIGUSR2)
    output = finish(proc, tmp_path, timeout=300)
    assert proc.returncode == 0, output
    job = last.parents[1]
    log = (job / "run.log").read_text()
    assert "job interrupted: stopped by SIGUSR2" in log and "requeued job: continuing from" in log
    expected = metrics(next(reference.glob("0_*")))
    assert {k: metrics(job)[k] for k in METRICS} == {k: expected[k] for k in METRICS}
    assert [row["epoch"] for row in read_history(job / "history.csv")] == [0, 1, 2]


# --------------------------------------------------------------------------------------------
# Signal handling and resume planning, in this process
# --------------------------------------------------------------------------------------------


@pytest.fixture
def clean_signals():
    signals._reset()
    yield
    signals._reset()


def test_interrupted_exits_with_128_plus_the_signal_and_pickles_with_it():
    stop_ = signals.Interrupted(signal.SIGTERM)
    assert (
        isinstance(stop_, SystemExit) and stop_.code == 143 and str(stop_) == "stopped by SIGTERM"
    )
    again = pickle.loads(pickle.dumps(stop_))
    assert (again.signum, again.code) == (signal.SIGTERM, 143)
    assert signals.Interrupted(signal.SIGINT).code == 130


def test_a_stop_signal_raises_once_and_waits_for_the_end_of_a_deferred_block(clean_signals):
    with signals.stop_on_signals():
        with pytest.raises(signals.Interrupted) as raised:
            signal.raise_signal(signal.SIGTERM)
        assert raised.value.code == 143 and signals.received() == signal.SIGTERM
        signal.raise_signal(signal.SIGINT)  # while stopping: only noted
        assert signals.received() == signal.SIGINT
    signals._reset()
    with signals.stop_on_signals():
        written = []
        with pytest.raises(signals.Interrupted):
            with signals.deferred():
                signal.raise_signal(signal.SIGINT)
                written.append("record")
        assert written == ["record"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_an_interrupt_that_python_drops_is_raised_again(clean_signals, monkeypatch):
    class SignalledWhileCollected:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)  # the handler runs here, where a raise is dropped
            sum(range(10))

    resent = []
    timer = signals.threading.Timer
    monkeypatch.setattr(
        signals.threading, "Timer", lambda *args: resent.append(args) or timer(*args)
    )
    with signals.stop_on_signals():
        with pytest.raises(signals.Interrupted):
            obj = SignalledWhileCollected()
            del obj
            time.sleep(2)
    assert [args[2][1] for args in resent] == [signal.SIGTERM]


def test_a_stop_waits_until_the_checkpoint_being_saved_is_written(clean_signals):
    written = []

    def save_checkpoint():  # as Lightning's: the signal arrives in the middle of it
        signal.raise_signal(signal.SIGTERM)
        time.sleep(0.3)  # the signal is sent anew meanwhile: still saving
        written.append("last.ckpt")

    with signals.stop_on_signals():
        with pytest.raises(signals.Interrupted):
            save_checkpoint()
            time.sleep(2)
    assert written == ["last.ckpt"]


def test_another_librarys_handler_is_kept_and_the_signal_noted(clean_signals):
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with signals.stop_on_signals():
            signal.raise_signal(signal.SIGTERM)  # e.g. submitit keeping a SLURM job running
        assert seen == [signal.SIGTERM] and signals.received() == signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_stop_signal_during_a_log_write_is_logged_after_it(clean_signals):
    log_file, failed = SignalledFile(), []
    handler = handler_into(log_file, failed)
    logger = logging.getLogger("cmfnet")
    logger.addHandler(handler)
    try:
        with signals.stop_on_signals():
            with pytest.raises(signals.Interrupted):
                with signals.deferred():
                    logging.getLogger("cmfnet.lit.progress").warning("epoch 3 done")
        for thread in threading.enumerate():
            if thread.name == signals.LOG_THREAD:
                thread.join(10)
    finally:
        logger.removeHandler(handler)
    assert not failed
    assert log_file.lines() == [
        "epoch 3 done",
        "SIGTERM: stopping (a job in progress is recorded as interrupted)",
    ]


def test_the_requeue_signals_slurm_sends_a_requeueing_job_reach_no_handler(
    clean_signals, monkeypatch
):
    monkeypatch.setenv("SUBMITIT_FOLDER", "job")
    handled, requeued = [], []

    def submitits_requeue(signum, frame):  # scontrol requeue: SLURM signals the job at once
        requeued.append(signum)
        for sent in (signal.SIGCONT, signal.SIGTERM):
            os.kill(os.getpid(), sent)
        time.sleep(0.1)

    monkeypatch.setattr(signals, "_submitit_requeue", submitits_requeue)
    monkeypatch.setattr(signals, "_received", signal.SIGUSR2)
    before = {s: signal.signal(s, lambda n, f: handled.append(n)) for s in signals.REQUEUE_SIGNALS}
    try:
        signals.requeue_if_timed_out()
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    assert requeued == [signal.SIGUSR2] and handled == []


def make_job(
    sweep: Path, name: str, status: str | None, overrides: list[str], last_ckpt: bool = False
) -> Path:
    """A job folder as a sweep leaves it: its overrides, maybe a metrics.json and a last.ckpt."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if status is not None:
        (job / "metrics.json").write_text(json.dumps({"status": status, "error": "x"}))
    if last_ckpt:
        (job / "checkpoints").mkdir()
        (job / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    return job


def test_resume_plan_continues_interrupted_and_killed_jobs_and_restarts_failed_and_unstarted_ones(
    tmp_path,
):
    sweep = tmp_path / "sweep"
    make_job(sweep, "0_seed=1", "completed", ["seed=1"], last_ckpt=True)
    make_job(sweep, "1_seed=2", "interrupted", ["seed=2"], last_ckpt=True)
    make_job(sweep, "2_seed=3", None, ["seed=3"], last_ckpt=True)  # killed before metrics.json
    failed = make_job(sweep, "3_seed=4", "failed", ["seed=4"], last_ckpt=True)
    jobs = [
        {"num": i, "dir": f"{i}_seed={i + 1}", "overrides": [f"seed={i + 1}"]} for i in range(5)
    ]
    (sweep / JOB_LIST).write_text(json.dumps({"cwd": str(tmp_path), "jobs": jobs}))
    assert [row["status"] for row in sorted(collect_results(sweep), key=lambda r: r["job"])] == [
        "completed",
        "interrupted",
        "failed",
        "failed",
        "not started",
    ]

    steps = {step.job: step for step in resume_plan(sweep)}
    assert sorted(steps) == ["1_seed=2", "2_seed=3", "3_seed=4", "4_seed=5"]
    assert steps["1_seed=2"].overrides[-1] == steps["2_seed=3"].overrides[-1] == "ckpt_path=last"
    assert steps["2_seed=3"].status == "killed"
    assert not any(
        "ckpt_path" in o for o in steps["3_seed=4"].overrides + steps["4_seed=5"].overrides
    )
    assert steps["3_seed=4"].afresh and not steps["4_seed=5"].afresh
    folder = f"hydra.run.dir='{(sweep / '4_seed=5').resolve()}'"
    assert steps["4_seed=5"].overrides == ["seed=5", "hydra.mode=RUN", folder]
    assert "3_seed=4" not in {step.job for step in resume_plan(sweep, rerun_failed=False)}

    (failed / "error.log").write_text("old traceback")
    (failed / "notes.txt").write_text("a user's file")
    set_aside_stale_files(failed)
    assert sorted(p.name for p in failed.iterdir()) == [".hydra", "checkpoints.stale", "notes.txt"]
    assert (failed / "checkpoints.stale" / "last.ckpt").read_bytes() == b"ckpt"
    write_results(sweep)
    assert "| 4_seed=5 | not started |" in (sweep / "results.md").read_text()


def test_a_fresh_run_never_resumes_from_a_checkpoint_on_its_own(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from cmfnet.sweeps.rerun import resume_requeued_job

    job = make_job(tmp_path, "0_seed=1", None, ["seed=1"], last_ckpt=True)
    record = {"status": "interrupted", "overrides": ["seed=1"]}
    (job / "metrics.json").write_text(json.dumps(record))
    monkeypatch.delenv("SUBMITIT_FOLDER", raising=False)

    def resumes() -> bool:
        cfg = OmegaConf.create({"ckpt_path": None})
        resume_requeued_job(cfg, job, ["seed=1"])
        return cfg.ckpt_path == "last"

    assert not resumes()  # not a submitit job
    monkeypatch.setenv("SUBMITIT_FOLDER", str(tmp_path))
    assert resumes()  # the requeued job itself
    (job / "metrics.json").write_text(json.dumps({**record, "overrides": ["seed=2"]}))
    assert not resumes()  # another job's record
    (job / "metrics.json").write_text(json.dumps({**record, "status": "failed"}))
    assert not resumes()


def test_resume_help_lists_its_options_with_defaults(capsys):
    from cmfnet.cli import main

    with pytest.raises(SystemExit):
        main(["resume", "--help"])
    out = capsys.readouterr().out
    for option in (
        "SWEEP_DIR",
        "--failed",
        "(default: rerun)",
        "--dry-run",
        "--stop-timeout",
        "(default: 60)",
    ):
        assert option in out
