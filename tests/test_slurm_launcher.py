"""The SLURM launcher's wait on squeue, with squeue's answers scripted (no cluster needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from cmfnet.runs.slurm import Held
from hydra_plugins.cmfnet_launchers import slurm_launcher
from hydra_plugins.cmfnet_launchers.slurm_launcher import CmfnetSlurmLauncher


def launcher(settle_s: float) -> CmfnetSlurmLauncher:
    waiting = object.__new__(CmfnetSlurmLauncher)  # only what wait() reads
    waiting.poll_interval_s, waiting.settle_s = 0.01, settle_s
    return waiting


def scripted_squeue(monkeypatch, answers: list, job):
    """squeue answers in turn; when they run out, the job's result file appears and squeue no
    longer lists it."""
    calls = []

    def held_jobs(ids):
        calls.append(list(ids))
        if len(calls) <= len(answers):
            return answers[len(calls) - 1]
        job.paths.result_pickle.write_bytes(b"done")
        return {}

    monkeypatch.setattr(slurm_launcher, "held_jobs", held_jobs)
    monkeypatch.setattr(slurm_launcher, "job_return", lambda num, j: ("return", len(calls)))
    return calls


def fake_job(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(job_id="7", paths=SimpleNamespace(result_pickle=tmp_path / "7.pkl"))


def test_a_job_missing_from_squeue_for_a_moment_while_requeued_is_still_waited_for(
    tmp_path, monkeypatch
):
    """Seen on a real cluster: after submitit requeued a timed-out job, squeue did not list it
    for one poll; the sweep took that for the job's end and gave up on a job SLURM still ran."""
    job = fake_job(tmp_path)
    running, pending = Held("7", "RUNNING", "None"), Held("7", "PENDING", "BeginTime")
    answers = [{"7": running}, {}, {}, {"7": pending}, {"7": running}]
    calls = scripted_squeue(monkeypatch, answers, job)
    assert launcher(settle_s=60).wait([job], [0]) == [("return", 6)]
    assert len(calls) == 6  # it polled through the gap and ended when the result appeared


def test_a_job_gone_from_squeue_without_a_result_ends_after_the_settling_time(
    tmp_path, monkeypatch
):
    job = fake_job(tmp_path)
    monkeypatch.setattr(slurm_launcher, "held_jobs", lambda ids: {})  # killed: no result file
    monkeypatch.setattr(slurm_launcher, "job_return", lambda num, j: "ended")
    assert launcher(settle_s=0.2).wait([job], [0]) == ["ended"]
    assert not job.paths.result_pickle.exists()
