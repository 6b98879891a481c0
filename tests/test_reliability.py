"""Reliability: runs and sweeps that survive faults, tables that never go half-written, no secret
in any record, offline by default. docs/reliability.md lists each fault and the test here.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch
from conftest import CONF_DIR, REPO
from helpers.run import run_env, run_py
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from cmfnet.data.transforms import JointSample
from cmfnet.lit.history import read_history
from cmfnet.lit.module import JointRecSRModule, NonFiniteLossError
from cmfnet.mri.losses import JointL1Loss
from cmfnet.runs import io as cmfnet_io
from cmfnet.runs.io import write_text_atomic
from cmfnet.sweeps.rerun import rerun_command, rerun_overrides
from cmfnet.sweeps.results import collect_results, write_results

FAKE_WANDB_KEY = "fake-wandb-key-0123456789abcdef0123"
FAKE_SERVICE_TOKEN = "fake-service-token-9876543210"
SMOKE = ("experiment=smoke",)


def last_stderr_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# --------------------------------------------------------------------------------------------
# Atomic, idempotent results tables
# --------------------------------------------------------------------------------------------


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "results.md"
    target.write_text("old complete table\n")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cmfnet_io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(target, "new table " * 1000)
    assert target.read_text() == "old complete table\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"], "temporary file left behind"


def test_atomic_write_keeps_the_old_file_when_writing_fails_midway(tmp_path, monkeypatch):
    target = tmp_path / "results.csv"
    target.write_text("job,status\n0,completed\n")

    def failing_fsync(fd):
        raise OSError("I/O error after a partial write")

    monkeypatch.setattr(cmfnet_io.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="partial write"):
        write_text_atomic(target, "job,status\n" + "1,completed\n" * 10_000)
    assert target.read_text() == "job,status\n0,completed\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_atomic_write_onto_a_folder_names_it_and_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "scores.json"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=r"scores\.json: is a folder, not a file to write"):
        write_text_atomic(folder, "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"] and folder.is_dir()


def make_job(
    sweep: Path, name: str, metrics: dict | bytes | None, overrides: Sequence[str] = ()
) -> Path:
    """A job folder as a multirun leaves it: ``.hydra/overrides.yaml`` and maybe
    ``metrics.json``."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if isinstance(metrics, dict):
        (job / "metrics.json").write_text(json.dumps(metrics))
    elif isinstance(metrics, bytes):
        (job / "metrics.json").write_bytes(metrics)
    return job


COMPLETED = {
    "status": "completed",
    "model": "cmfnet",
    "scale": 4,
    "accel": 4,
    "mask": "random",
    "seed": 1,
    "sr_psnr": 30.123456,
    "sr_psnr_std": 0.5,
    "sr_ssim": 0.9,
    "sr_ssim_std": 0.01,
}


def test_write_results_is_byte_identical_on_rerun_however_the_folder_is_spelled(
    tmp_path, monkeypatch
):
    sweep = tmp_path / "multirun" / "adhoc" / "2026-01-01_00-00-00_123"
    make_job(sweep, "0_seed=1", COMPLETED)
    make_job(sweep, "1_seed=2", None)
    make_job(sweep, "10_seed=3", {**COMPLETED, "seed": 3})
    write_results(sweep)
    first = {name: (sweep / name).read_bytes() for name in ("results.csv", "results.md")}
    write_results(sweep)
    monkeypatch.chdir(tmp_path / "multirun")
    write_results(Path("adhoc") / sweep.name)
    assert {name: (sweep / name).read_bytes() for name in first} == first
    table = first["results.md"].decode()
    assert table.startswith(f"# Results: adhoc/{sweep.name}\n")
    jobs = [
        line.split(" | ")[0].strip("| ")
        for line in table.splitlines()
        if line.startswith("| ") and "_seed=" in line
    ]
    assert jobs == ["0_seed=1", "1_seed=2", "10_seed=3"]  # numeric job order, not string order
    assert "- `1_seed=2`: no metrics.json (killed or never finished)" in table


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
metric_dicts = st.fixed_dictionaries(
    {"status": st.sampled_from(["completed", "failed", 3, None])},
    optional={
        "sr_psnr": json_values,
        "sr_psnr_std": json_values,
        "job": json_values,
        "seed": json_values,
    },
)


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    contents=st.lists(
        st.one_of(st.binary(max_size=64), json_values, metric_dicts), min_size=1, max_size=3
    )
)
def test_results_tables_survive_any_metrics_file(contents):
    """Garbage bytes, JSON that is not an object, non-numeric metrics, a 'job' key inside
    metrics.json: every job still gets exactly one row; only well-formed completed jobs count
    as completed."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        sweep = Path(folder) / "sweep"
        for i, content in enumerate(contents):
            raw = content if isinstance(content, bytes) else json.dumps(content).encode()
            make_job(sweep, f"{i}_x={i}", raw)
        rows = write_results(sweep)
        assert sorted(row["job"] for row in rows) == sorted(
            f"{i}_x={i}" for i in range(len(contents))
        )
        table = (sweep / "results.md").read_text()
        for i, content in enumerate(contents):
            completed = isinstance(content, dict) and content.get("status") == "completed"
            assert (f"| {i}_x={i} | completed |" in table) == completed


# --------------------------------------------------------------------------------------------
# Re-running a killed job of a sweep
# --------------------------------------------------------------------------------------------


def test_rerun_overrides_replace_mode_folder_and_checkpoint(tmp_path):
    job = make_job(
        tmp_path / "sweep",
        "3_accel=8,scale=2",
        None,
        ["sweeps=grid", "accel=8", "scale=2", "ckpt_path=/old.ckpt", "+extra.flag=true"],
    )
    folder = f"hydra.run.dir='{job.resolve()}'"
    assert rerun_overrides(job) == [
        "sweeps=grid",
        "accel=8",
        "scale=2",
        "+extra.flag=true",
        "hydra.mode=RUN",
        folder,
    ]
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert rerun_overrides(job)[-1] == "ckpt_path=last"
    assert shlex.split(rerun_command(job)) == [
        "python",
        "run.py",
        *rerun_overrides(job),
    ]  # survives the shell
    with pytest.raises(FileNotFoundError, match="no record of the job's overrides"):
        rerun_overrides(tmp_path)


@pytest.mark.slow
def test_killed_sweep_job_rerun_alone_into_its_folder_completes_the_table(tmp_path):
    proc = run_py(tmp_path, "-m", "seed=1,2", *SMOKE, "logger=csv", "trainer.max_epochs=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = next((tmp_path / "multirun" / "adhoc").iterdir())
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    killed = next(sweep.glob("1_seed=2*"))  # the folder name also lists trainer.max_epochs=1
    original = read_metrics(killed)
    (killed / "metrics.json").unlink()  # what a kill -9 before the end leaves
    write_results(sweep)
    assert f"| {killed.name} | failed |" in (sweep / "results.md").read_text()

    proc = run_py(tmp_path, *rerun_overrides(killed))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == jobs, (
        "the rerun made a new folder"
    )
    rows = {row["job"]: row for row in write_results(sweep)}
    assert rows[killed.name]["status"] == "completed" and rows[killed.name]["seed"] == 2
    assert (sweep / "results.md").read_text().count("| completed |") == 2
    assert rows[killed.name]["sr_psnr"] == pytest.approx(original["sr_psnr"], rel=1e-6)


# --------------------------------------------------------------------------------------------
# Concurrent sweeps
# --------------------------------------------------------------------------------------------


def configured_sweep_dir_at(timestamp: str) -> str:
    """conf/train.yaml's ``hydra.sweep.dir`` with its ``${now:...}`` fixed to ``timestamp``."""
    from omegaconf import OmegaConf

    pattern = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train.yaml"))["hydra"]["sweep"][
        "dir"
    ]
    fixed = re.sub(r"\$\{now:[^}]*\}", timestamp, pattern)
    assert fixed != pattern, "hydra.sweep.dir no longer holds a ${now:...} timestamp"
    return fixed


@pytest.mark.slow
def test_two_sweeps_started_in_the_same_second_get_their_own_folders_and_tables(tmp_path):
    """Both multiruns use the configured folder pattern with the same timestamp, as two sweeps
    started in one second would; only the process id can tell them apart."""
    sweep_dir = configured_sweep_dir_at("2026-01-01_00-00-00")
    args = [
        str(REPO / "run.py"),
        "-m",
        "seed=7",
        *SMOKE,
        "logger=csv",
        "trainer.max_epochs=1",
        "sweep_name=same",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, *args],
            cwd=tmp_path,
            env=run_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
    sweeps = sorted((tmp_path / "multirun" / "same").iterdir())
    assert len(sweeps) == 2
    assert {p.name for p in sweeps} == {f"2026-01-01_00-00-00_{proc.pid}" for proc in procs}
    for sweep in sweeps:
        rows = collect_results(sweep)
        assert [(row["job"].split(",")[0], row["status"]) for row in rows] == [
            ("0_seed=7", "completed")
        ]
        assert (sweep / "results.md").read_text().count("| completed |") == 1


# --------------------------------------------------------------------------------------------
# Non-finite losses
# --------------------------------------------------------------------------------------------

# StepLR(step_size=1, gamma=1e30): epoch 0 trains at the recipe's lr (a good checkpoint), epoch 1
# at lr 1e25, whose first step blows the weights up so that the next losses are NaN/inf.
EXPLODING_LR = ("scheduler.step_size=1", "scheduler.gamma=1e30", "trainer.max_epochs=2")


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    proc = run_py(tmp_path, *SMOKE, "logger=csv", *EXPLODING_LR, "hydra.run.dir=run")
    assert proc.returncode == 1
    line = last_stderr_line(proc)
    assert re.fullmatch(
        r"error: non-finite training loss at step \d+ \(batch \d+: .+\.h5 slice \d+.*\).*", line
    ), line
    assert "Traceback" not in proc.stderr
    run = tmp_path / "run"
    assert read_metrics(run)["status"] == "failed"
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0, "last.ckpt must be the last good (epoch 0) checkpoint"
    weights = [v for v in last["state_dict"].values() if v.is_floating_point()]
    assert weights and all(torch.isfinite(v).all() for v in weights)


@pytest.mark.slow
def test_skip_nonfinite_skips_and_counts_the_bad_batches_and_the_run_completes(tmp_path):
    proc = run_py(
        tmp_path,
        *SMOKE,
        "logger=csv",
        *EXPLODING_LR,
        "module.skip_nonfinite=true",
        "hydra.run.dir=run",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = read_metrics(tmp_path / "run")
    assert metrics["status"] == "completed"
    assert metrics["skipped_batches"] >= 1
    assert (
        proc.stdout.count("skipping batch: non-finite training loss") == metrics["skipped_batches"]
    )
    history = read_history(
        tmp_path / "run" / "history.csv"
    )  # skipped batches stay out of the epoch means
    assert "train/loss" in history[0] and all(
        np.isfinite(row["train/loss"]) for row in history if "train/loss" in row
    )
    # the test set is scored with the best (finite, epoch 0) checkpoint
    assert all(np.isfinite(metrics[k]) for k in ("sr_psnr", "sr_ssim", "rec_psnr", "rec_ssim"))


class ScaledIdentity(nn.Module):
    """A one-parameter model with the (target_input, aux_input) -> (rec, sr) contract."""

    def __init__(self, scale: int = 2):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.scale = scale

    def forward(self, target_input, aux_input):
        rec = target_input * self.weight
        return rec, nn.functional.interpolate(rec, scale_factor=self.scale)


def tiny_batch(value: float = 1.0) -> JointSample:
    return JointSample(
        target_input=torch.full((2, 1, 4, 4), value),
        aux_input=torch.ones(2, 1, 4, 4),
        rec_target=torch.zeros(2, 1, 4, 4),
        sr_target=torch.zeros(2, 1, 8, 8),
        mask=torch.ones(2, 4),
        mean=torch.zeros(2),
        std=torch.ones(2),
        sr_max=torch.zeros(2),
        rec_max=torch.zeros(2),
        fname=["vol_a.h5", "vol_b.h5"],
        slice_idx=[3, 5],
    )


def train_step(module: JointRecSRModule, batch: JointSample, batch_idx: int = 0) -> None:
    """What Lightning's loop does with one batch up to the optimizer step (its checks included)."""
    optimizer = torch.optim.SGD(module.model.parameters(), lr=0.1)
    module.training_step(batch, batch_idx).backward()
    module.on_before_optimizer_step(optimizer)
    optimizer.step()


def test_non_finite_loss_error_names_step_batch_files_and_slices():
    module = JointRecSRModule(ScaledIdentity(), JointL1Loss())
    with pytest.raises(
        NonFiniteLossError, match=r"step 0 \(batch 7: vol_a\.h5 slice 3, vol_b\.h5 slice 5\)"
    ):
        train_step(module, tiny_batch(float("inf")), batch_idx=7)


def test_non_finite_loss_error_names_the_setting_that_skips():
    module = JointRecSRModule(ScaledIdentity(), JointL1Loss())
    with pytest.raises(
        NonFiniteLossError, match=r"module\.skip_nonfinite=true to skip such batches"
    ):
        train_step(module, tiny_batch(float("nan")))


def test_skip_nonfinite_leaves_the_weights_of_a_non_finite_loss_batch_untouched():
    module = JointRecSRModule(ScaledIdentity(), JointL1Loss(), skip_nonfinite=True)
    train_step(module, tiny_batch(float("nan")))
    assert module.model.weight.item() == 1.0 and module.skipped_batches == 1
    train_step(module, tiny_batch(1.0))  # a good batch after it trains as usual
    assert module.model.weight.item() != 1.0 and module.skipped_batches == 1


def test_non_finite_gradient_stops_training_naming_the_parameter():
    module = JointRecSRModule(ScaledIdentity(), JointL1Loss())
    module.model.weight.grad = torch.tensor(float("inf"))
    with pytest.raises(NonFiniteLossError, match="non-finite gradient in weight at step 0"):
        module.on_before_optimizer_step(torch.optim.SGD(module.model.parameters(), lr=0.1))


def test_skip_nonfinite_also_skips_a_step_with_non_finite_gradients():
    """A finite loss can still give inf gradients (e.g. sqrt at 0); with skip_nonfinite the step
    must be skipped (weights untouched) and counted, not stop the run."""
    module = JointRecSRModule(ScaledIdentity(), JointL1Loss(), skip_nonfinite=True)
    optimizer = torch.optim.SGD(module.model.parameters(), lr=0.1)
    module.model.weight.grad = torch.tensor(float("inf"))
    module.on_before_optimizer_step(optimizer)
    optimizer.step()
    assert module.model.weight.item() == 1.0
    assert module.skipped_batches == 1


# --------------------------------------------------------------------------------------------
# Clear one-line errors for corrupted resume checkpoints and data files, through run.py
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_mismatched_last_checkpoint_is_named_and_a_truncated_one_gives_way(tmp_path):
    good = run_py(tmp_path, *SMOKE, "logger=none", "trainer.max_epochs=1", "hydra.run.dir=run")
    assert good.returncode == 0, good.stderr[-2000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    other = run_py(
        tmp_path,
        *SMOKE,
        "logger=none",
        "model=edsr",
        "trainer.max_epochs=2",
        "hydra.run.dir=run",
        "ckpt_path=last",
    )  # a checkpoint of another network
    assert other.returncode == 1 and "Traceback" not in other.stderr
    line = last_stderr_line(other)
    assert line.startswith(
        f"error: ckpt_path=last: {last} does not fit this run's model (EDSR): "
    ), line
    assert "missing" in line and "unexpected" in line, line
    truncated = last.read_bytes()[:4096]
    last.write_bytes(truncated)
    proc = run_py(
        tmp_path,
        *SMOKE,
        "logger=none",
        "trainer.max_epochs=2",
        "hydra.run.dir=run",
        "ckpt_path=last",
    )  # continues from the run's newest readable checkpoint, keeping the unreadable one
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{last} is unreadable; kept as last.ckpt.unreadable; continuing from best-" in (
        proc.stdout + proc.stderr
    )
    assert (last.parent / "last.ckpt.unreadable").read_bytes() == truncated
    history = read_history(tmp_path / "run" / "history.csv")
    assert [row["epoch"] for row in history] == [0, 1]  # epoch 1 trained once, after epoch 0


@pytest.mark.slow
def test_corrupted_data_file_gives_a_one_line_error_naming_it_through_run_py(tmp_path):
    from cmfnet.data.synth import generate_dataset

    root = generate_dataset(
        tmp_path / "knee",
        n_train=2,
        n_val=1,
        n_test=1,
        slices=2,
        hr_size=32,
        width=36,
        seed=0,
        source="phantom",
        noise=0.0,
        progress=False,
    )
    broken = sorted((Path(root) / "singlecoil_val").glob("*_pdfs.h5"))[0]
    broken.write_bytes(broken.read_bytes()[:1000])
    proc = run_py(
        tmp_path,
        *SMOKE,
        "logger=none",
        "data=fastmri_knee",
        f"data.root={root}",
        "data.num_workers=0",
        "hydra.run.dir=run",
    )
    assert proc.returncode == 1
    line = last_stderr_line(proc)
    assert line.startswith("error: ") and broken.name in line, line


@pytest.mark.slow
@pytest.mark.parametrize("fill_cache", ["true", "false"])
def test_bad_slice_met_by_loader_workers_gives_a_one_line_error_naming_it(tmp_path, fill_cache):
    """With workers the slice is read in another process (the cache fill at set-up, or the
    training loader); the error must still name the file and slice, not PyTorch's wrapper."""
    import h5py

    from cmfnet.data.synth import generate_dataset

    root = generate_dataset(
        tmp_path / "knee",
        n_train=2,
        n_val=1,
        n_test=1,
        slices=3,
        hr_size=32,
        width=36,
        seed=0,
        source="phantom",
        noise=0.0,
        progress=False,
    )
    broken = sorted((Path(root) / "singlecoil_train").glob("*_pdfs.h5"))[0]
    with h5py.File(broken, "a") as hf:
        kspace = hf["kspace"][()]
        kspace[1, 3, 4] = np.nan
        hf["kspace"][...] = kspace
    proc = run_py(
        tmp_path,
        *SMOKE,
        "logger=none",
        "data=fastmri_knee",
        f"data.root={root}",
        "data.num_workers=2",
        f"data.fill_cache={fill_cache}",
        "hydra.run.dir=run",
    )
    assert proc.returncode == 1
    line = last_stderr_line(proc)
    assert line == f"error: {broken}: slice 1 k-space contains NaN or inf", line


# --------------------------------------------------------------------------------------------
# Secrets and offline operation
# --------------------------------------------------------------------------------------------


def files_containing(folder: Path, secrets: tuple[str, ...]) -> dict[str, list[str]]:
    """``{secret: [relative paths of files under folder whose bytes contain it]}``
    (binary files too)."""
    found: dict[str, list[str]] = {s: [] for s in secrets}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for secret in secrets:
            if secret.encode() in data:
                found[secret].append(str(path.relative_to(folder)))
    return found


@pytest.mark.slow
def test_no_file_of_a_wandb_run_contains_a_secret_from_the_environment(tmp_path):
    """Fake W&B key and service token in the environment; every file under the run folder
    (configs, logs, checkpoints, examples, W&B's binary records) is searched."""
    proc = run_py(
        tmp_path,
        *SMOKE,
        "logger=wandb",
        "trainer.max_epochs=1",
        "hydra.run.dir=run",
        env={"WANDB_API_KEY": FAKE_WANDB_KEY, "MY_SERVICE_TOKEN": FAKE_SERVICE_TOKEN},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "run"
    assert list((run / "wandb").glob("offline-run-*/*.wandb")), "no W&B record was written"
    assert list((run / "checkpoints").glob("*.ckpt")) and (run / "config.yaml").is_file()
    assert files_containing(run, (FAKE_WANDB_KEY, FAKE_SERVICE_TOKEN)) == {
        FAKE_WANDB_KEY: [],
        FAKE_SERVICE_TOKEN: [],
    }


@pytest.mark.slow
def test_a_secret_interpolated_into_the_config_is_redacted_in_every_file(tmp_path):
    """The token reaches the config through ``${oc.env:...}``, under a secret-looking key and
    inside a harmless value: W&B and checkpoints get the redacted config; so must config.yaml."""
    proc = run_py(
        tmp_path,
        *SMOKE,
        "logger=wandb",
        "trainer.max_epochs=1",
        "hydra.run.dir=run",
        "+service.token=${oc.env:MY_SERVICE_TOKEN}",
        "+notes=run-for-${oc.env:MY_SERVICE_TOKEN}",
        env={"MY_SERVICE_TOKEN": FAKE_SERVICE_TOKEN},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert files_containing(tmp_path / "run", (FAKE_SERVICE_TOKEN,)) == {FAKE_SERVICE_TOKEN: []}


@pytest.mark.slow
def test_a_sweep_logs_a_jobs_overrides_without_its_secrets(monkeypatch):
    """The launchers' job lines (``#0: SLURM job 12: ...``) show overrides as
    ``shown_overrides`` gives them."""
    from cmfnet.runs.config import shown_overrides

    monkeypatch.setenv("MY_SERVICE_TOKEN", "env-secret-42424242")
    shown = shown_overrides(
        ["model=cmfnet", "+hf_token=typed-secret", "data.root=/x/env-secret-42424242", "hydra.a=1"]
    )
    assert shown == "model=cmfnet +hf_token=<redacted> data.root=/x/<redacted>"


@pytest.mark.slow
def test_a_secret_typed_on_the_command_line_is_in_no_file_wandb_would_upload(tmp_path):
    """W&B records the command line in its run file; the secret-looking override and a secret
    environment value typed as a value must appear there, and in the logged config, only redacted.
    Hydra's own ``.hydra/`` record keeps the command line as typed (the README says so)."""
    proc = run_py(
        tmp_path,
        *SMOKE,
        "logger=wandb",
        "trainer.max_epochs=1",
        "hydra.run.dir=run",
        "+hf_token=abc-secret-999",
        f"+notes=key-{FAKE_SERVICE_TOKEN}",
        env={"MY_SERVICE_TOKEN": FAKE_SERVICE_TOKEN},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "run"
    records = list((run / "wandb").glob("offline-run-*/*.wandb"))
    assert len(records) == 1
    raw = records[0].read_bytes()
    assert (
        b"+hf_token=<redacted>" in raw and b"experiment=smoke" in raw
    )  # the command line is recorded
    assert files_containing(run / "wandb", ("abc-secret-999", FAKE_SERVICE_TOKEN)) == {
        "abc-secret-999": [],
        FAKE_SERVICE_TOKEN: [],
    }
    assert "abc-secret-999" not in (run / "config.yaml").read_text()
    assert "abc-secret-999" in (run / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_offline_by_default_with_no_key_no_network_and_an_unwritable_home(tmp_path):
    """HOME points below a regular file: nothing can be created there, not even by root (which
    ignores permission bits, so chmod 0o555 would prove nothing)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("HOME lies below this file")
    home = blocker / "home"
    with pytest.raises(NotADirectoryError):
        (home / ".cache").mkdir(parents=True)
    proc = run_py(
        tmp_path,
        *SMOKE,
        "logger=wandb",
        "trainer.max_epochs=1",
        "hydra.run.dir=run",
        env={"HOME": str(home)},
        drop=("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "run"
    metrics = read_metrics(run)
    assert metrics["status"] == "completed"
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(metrics["wandb_run_id"])
    assert list(offline[0].glob("*.wandb"))
    assert not home.exists()


@pytest.mark.slow
def test_resuming_from_another_runs_finished_checkpoint_tests_its_weights_not_that_runs_files(
    tmp_path,
):
    """Lightning restores the donor run's best-checkpoint path; with no epoch left to train, the
    test must score the resumed weights, not a file in (or missing from) the donor's folder."""
    donor = run_py(tmp_path, *SMOKE, "logger=none", "hydra.run.dir=donor")
    assert donor.returncode == 0, donor.stderr[-2000:]
    copied = tmp_path / "copied.ckpt"
    copied.write_bytes((tmp_path / "donor" / "checkpoints" / "last.ckpt").read_bytes())
    shutil.rmtree(tmp_path / "donor")
    proc = run_py(tmp_path, *SMOKE, "logger=none", "hydra.run.dir=run", f"ckpt_path={copied}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = read_metrics(tmp_path / "run")
    assert metrics["status"] == "completed" and np.isfinite(metrics["sr_psnr"])
    assert "is another run's" in proc.stdout + proc.stderr


def test_the_tested_checkpoint_is_best_or_last_and_never_another_runs(tmp_path):
    from types import SimpleNamespace

    from cmfnet.runs.checkpoint import tested_checkpoint

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    own = SimpleNamespace(
        dirpath=str(tmp_path / "run" / "checkpoints"),
        best_model_path=str(tmp_path / "run" / "checkpoints" / "best-001.ckpt"),
    )
    assert tested_checkpoint("best", own) == own.best_model_path
    assert tested_checkpoint("last", own) is None  # the weights as training left them
    foreign = SimpleNamespace(
        dirpath=own.dirpath,
        best_model_path=str(tmp_path / "donor" / "checkpoints" / "best-001.ckpt"),
    )
    assert tested_checkpoint("best", foreign) is None
    assert tested_checkpoint("best", None) is None
    with pytest.raises(ValueError, match="test_checkpoint must be 'best' or 'last', got 'first'"):
        tested_checkpoint("first", own)


@pytest.mark.parametrize(
    "value, finite",
    [
        (torch.tensor([1.0, float("nan"), 2.0]), False),
        (torch.tensor([1.0, float("inf"), -float("inf")]), False),  # inf - inf: the sum is NaN
        (torch.full((4,), 3e38), True),  # overflows a float32 sum, not a float64 one
        (
            torch.tensor([1e308, 1e308], dtype=torch.float64),
            True,
        ),  # overflows the float64 sum: looked at element-wise
        (torch.tensor([1e308, float("nan")], dtype=torch.float64), False),
        (torch.tensor([1, 2, 3]), True),
        (np.array([0.5, np.nan], dtype=np.float32), False),
        (np.array([1 + 1j, complex(np.inf, 0)], dtype=np.complex64), False),
        (np.full(3, 3e38, dtype=np.float32), True),
        ("name.h5", True),
    ],
)
def test_all_finite_matches_an_element_wise_check(value, finite):
    from cmfnet.data.paired import all_finite, non_finite_field

    assert all_finite(value) is finite
    assert non_finite_field((torch.zeros(2), value)) == (None if finite else "1")


def test_a_run_continued_from_its_folder_logs_into_its_newest_wandb_run(tmp_path):
    """``ckpt_path=last`` (``cmfnet resume``, a SLURM requeue) keeps the W&B run id of the run
    folder's newest W&B run, so that ``wandb sync`` appends the parts into one run."""
    from omegaconf import OmegaConf

    from cmfnet.lit.loggers import continue_wandb_run

    (tmp_path / "wandb" / "offline-run-20261206_010101-first1").mkdir(parents=True)
    (tmp_path / "wandb" / "offline-run-20261206_020202-again2").mkdir()
    loggers = OmegaConf.create(
        {
            "wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger", "id": None},
            "csv": {"_target_": "lightning.pytorch.loggers.CSVLogger"},
        }
    )
    continue_wandb_run(loggers, tmp_path)
    assert loggers.wandb.id == "again2" and loggers.wandb.resume == "allow"
    assert "id" not in loggers.csv
    given = OmegaConf.create({"wandb": {"_target_": "WandbLogger", "id": "mine"}})
    continue_wandb_run(given, tmp_path)
    assert given.wandb.id == "mine"
