"""End-to-end: smoke runs, a 2x2 multirun in a subprocess, kill-and-resume, failing jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_scored_as_one_process, descendant_pids, pid_alive
from helpers.run import run_py
from omegaconf import OmegaConf

from cmfnet.lit.history import read_history

pytestmark = pytest.mark.slow


#: the W&B settings of these runs: offline, with a key that must never be written anywhere
WANDB = {"WANDB_MODE": "offline", "WANDB_API_KEY": "fake-secret-key-0123456789"}


def test_smoke_run_writes_metrics_checkpoints_images_and_offline_wandb(tmp_path):
    proc = run_py(tmp_path, "experiment=smoke", "hydra.run.dir=run", env=WANDB, check=True)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    offline_run = next((run / "wandb").glob("offline-run-*"))
    for line in (
        f"run folder: {run}",
        f"metrics:  {run / 'metrics.json'}",
        f"images:   {run / 'images' / 'val_examples.png'}",
        f"W&B run (offline): {offline_run}",
        f"upload it with:    wandb sync {offline_run}",
    ):
        assert line in proc.stdout  # the run ends by saying where everything is
    assert metrics["status"] == "completed"
    for key in ("sr_psnr", "sr_ssim", "sr_nmse", "rec_psnr", "rec_ssim", "rec_nmse", "sr_psnr_std"):
        assert isinstance(metrics[key], float), key
    assert (metrics["model"], metrics["scale"], metrics["accel"], metrics["mask"]) == (
        "cmfnet",
        4,
        4,
        "random",
    )
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert (run / "images" / "val_examples.png").stat().st_size > 1000
    history = read_history(run / "history.csv")
    config = OmegaConf.load(run / "config.yaml")
    assert [row["epoch"] for row in history] == list(range(config.trainer.max_epochs))
    assert all(row["train/loss"] > 0 and "val/sr_psnr" in row for row in history)
    best = torch.load(
        next((run / "checkpoints").glob("best-*.ckpt")), map_location="cpu", weights_only=True
    )
    monitor = next(v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert max(row["val/sr_psnr"] for row in history) == pytest.approx(
        float(monitor["best_model_score"]), rel=1e-6
    )
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(metrics["wandb_run_id"])
    logged = (run / "wandb").rglob("*")
    assert not any(
        "fake-secret-key" in p.read_text(errors="ignore")
        for p in logged
        if p.is_file() and p.stat().st_size < 5e6
    )
    assert "fake-secret-key" not in (run / "config.yaml").read_text()


def test_two_by_two_multirun_writes_job_folders_and_results(tmp_path):
    run_py(
        tmp_path,
        "-m",
        "scale=2,4",
        "accel=4,8",
        "experiment=smoke",
        "model=cmfnet_no_mmf",
        timeout=600,
        env=WANDB,
        check=True,
    )
    sweeps = list((tmp_path / "multirun" / "adhoc").iterdir())
    assert len(sweeps) == 1
    sweep = sweeps[0]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 4
    run_ids = set()
    cells = set()
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "completed"
        cells.add((metrics["scale"], metrics["accel"]))
        run_ids.add(metrics["wandb_run_id"])
        assert (job / "config.yaml").is_file()
        offline = list((job / "wandb").glob("offline-run-*"))
        assert len(offline) == 1 and offline[0].name.endswith(
            metrics["wandb_run_id"]
        )  # no job logs into another's run
        named = OmegaConf.load(
            job / "config.yaml"
        ).logger.wandb  # the saved config says what W&B got
        assert named.name == f"cmfnet_no_mmf-x{metrics['scale']}-r{metrics['accel']}-random-s42"
        assert named.group == f"adhoc/{sweep.name}" and f"scale={metrics['scale']}" in named.tags
        raw = next(offline[0].glob("*.wandb")).read_bytes()
        assert all(value.encode() in raw for value in (named.name, named.group, *named.tags))
    assert cells == {(2, 4), (2, 8), (4, 4), (4, 8)}
    assert len(run_ids) == 4
    table = (sweep / "results.md").read_text()
    assert table.count("| completed |") == 4
    assert (sweep / "results.csv").read_text().count("\n") == 5


def test_failing_job_does_not_stop_the_sweep_and_is_listed(tmp_path):
    # scale=3 is impossible: that job fails, the other completes
    proc = run_py(
        tmp_path,
        "-m",
        "scale=3,2",
        "experiment=smoke",
        "logger=csv",
        check=False,
        timeout=600,
        env=WANDB,
    )
    sweep = next((tmp_path / "multirun" / "adhoc").iterdir())
    statuses = {
        json.loads((job / "metrics.json").read_text())["status"]
        for job in sweep.iterdir()
        if (job / "metrics.json").is_file()
    }
    assert statuses == {"completed", "failed"}
    table = (sweep / "results.md").read_text()
    assert "| failed |" in table and "got 3" in table
    assert "1 of 2 jobs did not complete" in proc.stderr + proc.stdout


def test_bad_settings_give_one_line_errors_and_nonzero_exit(tmp_path):
    proc = run_py(tmp_path, "experiment=smoke", "accel=1", "logger=none", check=False, env=WANDB)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == "error: accel must be a finite number > 1, got 1"
    proc = run_py(
        tmp_path,
        "experiment=smoke",
        "data=fastmri_knee",
        f"data.root={tmp_path}/nope",
        "logger=none",
        check=False,
        env=WANDB,
    )
    assert proc.returncode != 0
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: data.root={tmp_path}/nope: folder not found"
    )
    proc = run_py(tmp_path, "model=no_such_model", check=False, env=WANDB)
    assert proc.returncode != 0 and "Could not find 'model/no_such_model'" in proc.stderr
    (tmp_path / "text.npy").write_text(
        "not an array"
    )  # numpy's own error would suggest unpickling it
    proc = run_py(
        tmp_path,
        "experiment=smoke",
        "mask=fixed",
        f"mask.path={tmp_path}/text.npy",
        "logger=none",
        check=False,
        env=WANDB,
    )
    assert proc.returncode != 0
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: mask.path: {tmp_path}/text.npy is not a .npy file (no NumPy header)"
    )
    proc = run_py(tmp_path, "experiment=smoke", "logger.wandb.mode=bogus", check=False, env=WANDB)
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("error: logger.wandb.mode: 'bogus' is not one of offline, ")
    )
    proc = run_py(
        tmp_path, "experiment=smoke", "accel=100", "logger=none", check=False, env=WANDB
    )  # 16 LR columns
    assert proc.returncode != 0
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: mask: center fraction 0.0032 of 16 k-space columns keeps no centre column "
            "(acceleration 100)"
        )
    )


def test_a_fractional_acceleration_is_recorded_as_given(tmp_path):
    run_py(
        tmp_path,
        "experiment=smoke",
        "accel=2.5",
        "logger=none",
        "trainer.max_epochs=1",
        "hydra.run.dir=run",
        env=WANDB,
        check=True,
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["accel"] == 2.5


def test_help_lists_the_groups_without_importing_lightning(tmp_path):
    proc = run_py(tmp_path, "--help", env={**WANDB, "PYTHONPROFILEIMPORTTIME": "1"}, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "hydra" in imported and not {"lightning", "torch"} & imported
    out = proc.stdout
    for group in (
        "model:",
        "data:",
        "mask:",
        "loss:",
        "trainer:",
        "logger:",
        "launcher:",
        "experiment:",
        "sweeps:",
    ):
        assert group in out


def test_killed_run_resumes_from_last_checkpoint_to_the_same_metrics(tmp_path):
    common = [
        "experiment=smoke",
        "logger=csv",
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=null",
    ]
    run_py(tmp_path, *common, "hydra.run.dir=full", env=WANDB, check=True)
    reference = json.loads((tmp_path / "full" / "metrics.json").read_text())

    env = {
        **os.environ,
        "CMFNET_CACHE_DIR": str(tmp_path.parent / "shared-cache"),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), *common, "hydra.run.dir=killed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and torch.load(last, map_location="cpu", weights_only=True)["epoch"] >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists(), (
        "the run finished before it could be killed"
    )
    run_py(tmp_path, *common, "hydra.run.dir=killed", "ckpt_path=last", env=WANDB, check=True)
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    for key in ("sr_psnr", "sr_ssim", "sr_nmse", "rec_psnr", "rec_ssim", "rec_nmse"):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-6), key
    full, killed = (
        read_history(tmp_path / "full" / "history.csv"),
        read_history(tmp_path / "killed" / "history.csv"),
    )
    assert [row["epoch"] for row in killed] == [row["epoch"] for row in full] == [0, 1, 2, 3]
    assert killed[-1]["val/sr_psnr"] == pytest.approx(full[-1]["val/sr_psnr"], rel=1e-6)


@pytest.mark.parametrize("launcher", ["gpus", "submitit_local"])
def test_parallel_and_submitit_launchers_run_every_job(tmp_path, launcher):
    # launcher=gpus without GPUs runs two jobs side by side on the CPU; submitit_local is the
    # SLURM launcher's code path with submitit's local executor.
    start = time.time()
    run_py(
        tmp_path,
        "-m",
        f"launcher={launcher}",
        "scale=2,4",
        "experiment=smoke",
        "logger=csv",
        timeout=600,
        env=WANDB,
        check=True,
    )
    sweep = next((tmp_path / "multirun" / "adhoc").iterdir())
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [json.loads((job / "metrics.json").read_text())["scale"] for job in jobs] == [2, 4]
    assert (sweep / "results.md").read_text().count("| completed |") == 2
    if launcher == "gpus":
        for job in jobs:
            metrics = json.loads((job / "metrics.json").read_text())
            assert 0 < metrics["job_start_to_first_step_s"] < metrics["launch_to_first_step_s"]
    assert time.time() - start < 600


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_killing_the_gpus_launcher_stops_its_workers(tmp_path):
    env = {
        **os.environ,
        "CMFNET_CACHE_DIR": str(tmp_path.parent / "shared-cache"),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "run.py"),
            "-m",
            "launcher=gpus",
            "scale=2,4",
            "experiment=smoke",
            "logger=csv",
            "trainer.max_epochs=10000",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not list(tmp_path.glob("multirun/adhoc/*/*/history.csv")):
        time.sleep(0.5)
    assert list(tmp_path.glob("multirun/adhoc/*/*/history.csv")), "no job started training"
    workers = descendant_pids(proc.pid)
    assert len(workers) >= 2
    proc.terminate()
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline and any(pid_alive(pid) for pid in workers):
        time.sleep(0.5)
    assert not [pid for pid in workers if pid_alive(pid)], (
        "workers kept running after the launcher was killed"
    )


def test_ddp_on_two_cpu_processes_scores_the_test_set_as_one_process_does(tmp_path):
    """trainer=ddp splits the test slices over the ranks (DistributedSampler pads with a repeat);
    the gathered metrics must equal a single-process evaluation of the same checkpoint."""
    proc = run_py(
        tmp_path,
        "experiment=smoke",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "logger=none",
        "hydra.run.dir=run",
        env=WANDB,
        check=True,
    )
    assert (tmp_path / "run" / "train_ddp_process_1.log").is_file()  # a second rank really ran
    assert "sync_dist=True" not in proc.stderr  # the metrics are gathered: no advice to sync
    assert_scored_as_one_process(tmp_path / "run", tmp_path)
