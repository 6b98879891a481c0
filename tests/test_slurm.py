"""``launcher=slurm`` on a real one-node SLURM cluster (``scripts/slurm_local_cluster.sh``; CI
starts it): a requeued job (``scontrol requeue``: SIGTERM) that then loses its node (every
process killed without a signal it could handle, the node set DOWN, SLURM requeues the job) and
a job that reaches its time limit (SIGUSR2, then submitit requeues it) continue from their
last.ckpt to the metrics of an uninterrupted run; the sweep waits, shows SLURM's state and ends
0; ``cmfnet resume`` leaves a job SLURM holds alone; W&B closes without an error and no secret
reaches its files. A 2-task DDP job runs as two SLURM tasks and scores its test set as one
process does. Skipped, with the reason, where no cluster answers."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, assert_scored_as_one_process

from cmfnet.lit.history import read_history

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SECRET = "abc-secret-7f3e9b21"
# Long enough that the 1-minute time limit (SIGUSR2 25 s before it) ends the first run mid-way.
SMOKE = ("experiment=smoke", "scale=2", "trainer.max_epochs=40")
RESOURCES = (
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.poll_interval_s=1",
)
METRICS = [
    f"{o}_{m}{s}" for o in ("sr", "rec") for m in ("psnr", "ssim", "nmse") for s in ("", "_std")
]


def cluster_problem() -> str | None:
    """Why no SLURM cluster answers here, or None."""
    if shutil.which("sinfo") is None:
        return "no SLURM here (start one: bash scripts/slurm_local_cluster.sh, as root)"
    try:
        state = subprocess.run(
            ["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"sinfo failed: {err}"
    states = state.stdout.split()
    if state.returncode != 0 or not {"idle", "mix", "alloc"} & set(states):
        return f"no SLURM node ready (sinfo: {(state.stdout + state.stderr).strip()[:200]})"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)


def hold_the_node(tmp_path_factory, exclusive: bool):
    """The one node, held while a test has jobs on it (a lock in the session's folder, which
    xdist's workers share): shared by the tests whose jobs can run side by side, alone by the
    test that fails the node, which makes SLURM requeue every job on it."""
    lock = tmp_path_factory.getbasetemp().parent / "cmfnet-slurm-node.lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


@pytest.fixture
def node(tmp_path_factory, cluster):
    yield from hold_the_node(tmp_path_factory, exclusive=False)


@pytest.fixture
def node_alone(tmp_path_factory, cluster):
    yield from hold_the_node(tmp_path_factory, exclusive=True)


def env_for(cwd: Path) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**base, "CMFNET_CACHE_DIR": str(cwd.parent / "shared-cache"), "OMP_NUM_THREADS": "1"}


def metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cluster) -> dict:
    """The same job run once, uninterrupted, outside SLURM."""
    cwd = tmp_path_factory.mktemp("reference")
    run = subprocess.run(
        [sys.executable, str(REPO / "run.py"), *SMOKE, "logger=csv", f"hydra.run.dir={cwd}/run"],
        cwd=cwd,
        env=env_for(cwd),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return metrics(cwd / "run")


def start_sweep(cwd: Path, *args: str, job: tuple[str, ...] = SMOKE) -> subprocess.Popen:
    command = [sys.executable, str(REPO / "run.py"), "-m", "launcher=slurm", *job, *RESOURCES]
    with open(cwd / "sweep.log", "w") as output:
        return subprocess.Popen(
            [*command, *args, f"hydra.sweep.dir={cwd / 'sweep'}"],
            cwd=cwd,
            env=env_for(cwd),
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def slurm_id(cwd: Path) -> str:
    record = cwd / "sweep" / ".cmfnet_slurm_jobs.json"
    deadline = time.time() + 60
    while not record.is_file() and time.time() < deadline:
        time.sleep(0.2)
    return json.loads(record.read_text())["0"]


def squeue(job_id: str) -> str:
    out = subprocess.run(
        ["squeue", "--noheader", "--array", "--format=%T|%r", f"--jobs={job_id}"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def wait_until(condition, proc: subprocess.Popen, cwd: Path, what: str, timeout: float = 240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    log = (cwd / "sweep.log").read_text()[-3000:]
    raise AssertionError(f"{what} never happened (exit {proc.poll()}): {log}")


def node_idle() -> bool:
    """Whether the node is idle, with nothing of an earlier job still being cleaned up."""
    out = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True)
    return out.stdout.split() == ["idle"]


def release_if_launch_failed(job_id: str) -> None:
    """SLURM holds a requeued job whose launch failed (``launch failed requeued held``, e.g. on
    a node still cleaning up after a failure) until ``scontrol release``, as an administrator
    would do."""
    if "launch failed" in squeue(job_id):
        subprocess.run(["scontrol", "release", job_id], capture_output=True)


def finish_releasing(job_id: str, proc: subprocess.Popen, timeout: float = 420) -> None:
    """Wait for the sweep, starting each requeued run of the job at once (SLURM delays it)."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if "BeginTime" in squeue(job_id):
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
        time.sleep(0.5)


def job_step_daemons(job_id: str) -> list[int]:
    """The pids of the job's ``slurmstepd`` processes (``slurmstepd: [ID.batch]``, ...)."""
    out = subprocess.run(
        ["pgrep", "-f", f"slurmstepd: \\[{job_id}\\."], capture_output=True, text=True
    )
    return [int(pid) for pid in out.stdout.split()]


def fail_node(job_id: str) -> None:
    """What a node failure does to a job: every process of it, and SLURM's step daemons that
    watch them, stop at once (SIGSTOP, so none can handle what follows), the node goes DOWN
    (SLURM requeues the job), and they die by SIGKILL, leaving no record of the stop. The node
    comes back (ReturnToService=2 or ``State=RESUME``) once nothing of the job is left on it, as
    after a reboot: a step daemon still alive would report the job, and SLURM would drain the
    node for a duplicate job id when the job starts again."""
    rows = subprocess.run(
        ["scontrol", "listpids", job_id], capture_output=True, text=True, check=True
    ).stdout.splitlines()[1:]  # after the header: PID JOBID STEPID LOCALID GLOBALID
    pids = [int(row.split()[0]) for row in rows if row.split() and row.split()[0].isdigit()]
    assert pids, f"scontrol listpids {job_id} listed no process"
    pids += job_step_daemons(job_id)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    down = ["scontrol", "update", "NodeName=vm", "State=DOWN", "Reason=cmfnet-test-node-failure"]
    subprocess.run(down, check=True)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 60
    while time.time() < deadline and job_step_daemons(job_id):
        time.sleep(0.5)
    assert not job_step_daemons(job_id), f"a slurmstepd of job {job_id} outlived its SIGKILL"
    deadline = time.time() + 60
    while time.time() < deadline and cluster_problem():
        subprocess.run(["scontrol", "update", "NodeName=vm", "State=RESUME"], capture_output=True)
        time.sleep(1)
    assert cluster_problem() is None, cluster_problem()


def job_folder(cwd: Path) -> Path:
    return next((cwd / "sweep").glob("0_*"))


def check_continued(cwd: Path, proc: subprocess.Popen, reference: dict, signal_name: str):
    """The sweep ended 0 and its job continued from its last.ckpt to the reference."""
    proc.wait(timeout=180)
    log = (cwd / "sweep.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    job = job_folder(cwd)
    run_log = (job / "run.log").read_text()
    assert f"job interrupted: stopped by {signal_name}" in run_log
    assert "requeued job: continuing from" in run_log
    outputs = "".join(p.read_text() for p in (cwd / "sweep" / ".submitit").rglob("*_log.*"))
    assert "Restored all states from the checkpoint" in outputs
    assert [row["epoch"] for row in read_history(job / "history.csv")] == list(range(40))
    assert {k: metrics(job)[k] for k in METRICS} == {k: reference[k] for k in METRICS}
    assert not list(job.glob("checkpoints/last-v*.ckpt"))
    assert "| completed |" in (cwd / "sweep" / "results.md").read_text()
    assert "Bypassing sacct" not in log and "ConnectionResetError" not in log
    logs = "".join(p.read_text() for p in (cwd / "sweep" / ".submitit").rglob("*.err"))
    assert "Traceback" not in logs, logs[-3000:]
    return log


def test_a_job_that_loses_its_node_then_is_requeued_continues_in_one_w_and_b_run(
    tmp_path, reference, node_alone
):
    proc = start_sweep(tmp_path, f"+hf_token={SECRET}")
    job_id = slurm_id(tmp_path)
    wait_until(
        lambda: list(tmp_path.glob("sweep/0_*/checkpoints/last.ckpt")),
        proc,
        tmp_path,
        "the first last.ckpt",
    )
    fail_node(job_id)  # no record: the restart is known by SLURM_RESTART_COUNT only
    wait_until(
        lambda: "BeginTime" in squeue(job_id) and node_idle(),
        proc,
        tmp_path,
        "the node-failure requeue",
    )
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
    run_log = next(tmp_path.glob("sweep/0_*")) / "run.log"
    history = run_log.parent / "history.csv"
    wait_until(
        lambda: (
            release_if_launch_failed(job_id)
            or "job restarted by SLURM without a record" in run_log.read_text()
        ),
        proc,
        tmp_path,
        "the restart after the node failure",
    )
    epochs_before = len(read_history(history))
    wait_until(
        lambda: len(read_history(history)) >= epochs_before + 2,
        proc,
        tmp_path,
        "two epochs after the restart",
    )
    subprocess.run(["scontrol", "requeue", job_id], check=True)  # SIGTERM, as pre-emption
    wait_until(lambda: "BeginTime" in squeue(job_id), proc, tmp_path, "the requeue")

    resume = subprocess.run(
        [sys.executable, "-m", "cmfnet.cli", "resume", str(tmp_path / "sweep")],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resume.returncode == 1, resume.stdout + resume.stderr
    assert f"SLURM job {job_id}: PENDING" in resume.stdout and "left to SLURM" in resume.stdout
    assert "| requeued |" in (tmp_path / "sweep" / "results.md").read_text()
    finish_releasing(job_id, proc)
    log = check_continued(tmp_path, proc, reference, "SIGTERM")
    # the sweep's own log names the job by its SLURM id and never calls it failed (its
    # PENDING spells may fall between two polls on a loaded machine; resume saw one above)
    assert f"SLURM job {job_id} ended" in log and "failed" not in log.lower()
    assert SECRET not in log and "+hf_token=<redacted>" in log  # the sweep's own console too
    job = job_folder(tmp_path)
    runs = sorted(p.name for p in (job / "wandb").glob("offline-run-*"))
    assert len(runs) == 3 and len({name.rsplit("-", 1)[1] for name in runs}) == 1, runs
    assert metrics(job)["wandb_run_id"] == runs[0].rsplit("-", 1)[1]
    leaked = [
        p for p in (job / "wandb").rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()
    ]
    assert not leaked and SECRET not in job.name


def test_a_job_past_its_time_limit_is_requeued_and_continues(tmp_path, reference, node):
    proc = start_sweep(
        tmp_path,
        "logger=csv",
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.max_num_timeout=12",  # a busy machine trains few epochs per minute
        "hydra.launcher.signal_delay_s=25",
    )
    finish_releasing(slurm_id(tmp_path), proc)
    log = check_continued(tmp_path, proc, reference, "SIGUSR2")
    assert "requeueing the job (submitit)" in (job_folder(tmp_path) / "run.log").read_text()
    # the sweep saw it run, then run again (more than once on a busy machine: each run has 1 min)
    assert log.count(": RUNNING") >= 2, log


def test_a_two_task_ddp_job_runs_under_slurm_and_scores_as_one_process(tmp_path, node):
    """trainer=ddp with hydra.launcher.tasks_per_node=2: SLURM starts both processes and
    Lightning's SLURM environment gives them their ranks (no process of Lightning's own)."""
    proc = start_sweep(
        tmp_path,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "hydra.launcher.tasks_per_node=2",
        "logger=csv",
        job=("experiment=smoke", "scale=2"),
    )
    proc.wait(timeout=420)
    log = (tmp_path / "sweep.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    outs = {p.name: p.read_text() for p in (tmp_path / "sweep" / ".submitit").glob("*/*_log.*")}
    rank_of = {n: o for n, o in outs.items() if n.endswith("_log.out")}
    assert len(rank_of) == 2 and any("global_rank=1(2)" in o for o in rank_of.values()), outs
    errs = "".join(o for n, o in outs.items() if n.endswith("_log.err"))
    assert "MEMBER: 2/2" in errs and "Traceback" not in errs, errs[-3000:]
    assert "sync_dist=True" not in errs
    job = job_folder(tmp_path)
    assert not list(job.glob("train_ddp_process_*.log"))  # SLURM started rank 1, not Lightning
    assert_scored_as_one_process(job, tmp_path)
