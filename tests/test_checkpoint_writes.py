"""Checkpoints are written atomically, and an unreadable last.ckpt gives way to the run's newest
readable checkpoint instead of a start from zero (#25 §4)."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.plugins.environments import SLURMEnvironment
from torch import nn

from cmfnet.lit.injections import trainer_plugins
from cmfnet.runs import checkpoint_io
from cmfnet.runs.checkpoint import resolve_ckpt_path
from cmfnet.runs.checkpoint_io import AtomicCheckpointIO, stale_partials
from cmfnet.runs.errors import DataError


class Wrapped(nn.Module):
    """A LightningModule's shape: the network under ``model``."""

    def __init__(self, width: int = 3):
        super().__init__()
        self.model = nn.Linear(width, width)


def checkpoint_of(module: nn.Module, epoch: int) -> dict:
    return {"state_dict": module.state_dict(), "epoch": epoch}


def test_a_write_interrupted_midway_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint(checkpoint_of(Wrapped(), epoch=1), path)
    before = path.read_bytes()

    def killed_midway(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the signal arrives during the write

    monkeypatch.setattr(checkpoint_io.torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint(checkpoint_of(Wrapped(), epoch=2), path)
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert stale_partials(path) == []


def test_a_partial_file_left_by_a_killed_write_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "last.ckpt"
    leftover = tmp_path / ".last.ckpt.abc123.tmp"  # what SIGKILL during a write leaves
    leftover.write_bytes(b"half")
    unrelated = tmp_path / ".best.ckpt.abc123.tmp"
    unrelated.write_bytes(b"another file's")
    AtomicCheckpointIO().save_checkpoint(checkpoint_of(Wrapped(), epoch=3), path)
    assert not leftover.exists() and unrelated.exists()
    assert torch.load(path, weights_only=True)["epoch"] == 3


def test_every_trainer_gets_the_atomic_writer_beside_its_configured_plugins(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # inside a SLURM job step
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plain = compose("train", overrides=["experiment=smoke"])
        slurm = compose("train", overrides=["experiment=smoke", "launcher=slurm"])
    assert [type(p) for p in trainer_plugins(plain.trainer)] == [AtomicCheckpointIO]
    kinds = [type(p) for p in trainer_plugins(slurm.trainer)]
    assert kinds == [SLURMEnvironment, AtomicCheckpointIO]


@pytest.fixture
def run_folder(tmp_path):
    """A run folder whose last.ckpt is truncated, beside a complete best checkpoint."""
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    module = Wrapped()
    torch.save(checkpoint_of(module, epoch=4), checkpoints / "best-004.ckpt")
    torch.save(checkpoint_of(module, epoch=6), checkpoints / "last.ckpt")
    whole = (checkpoints / "last.ckpt").read_bytes()
    (checkpoints / "last.ckpt").write_bytes(whole[: len(whole) // 2])
    return tmp_path, module


def test_an_unreadable_last_checkpoint_gives_way_to_the_newest_readable_one(run_folder, caplog):
    out, module = run_folder
    truncated = (out / "checkpoints" / "last.ckpt").read_bytes()
    with caplog.at_level(logging.WARNING, logger="cmfnet.runs.checkpoint"):
        chosen = resolve_ckpt_path("last", out, module)
    assert chosen == str(out / "checkpoints" / "best-004.ckpt")
    kept = out / "checkpoints" / "last.ckpt.unreadable"
    assert kept.read_bytes() == truncated  # kept, not deleted
    assert not (out / "checkpoints" / "last.ckpt").exists()
    message = caplog.records[-1].getMessage()
    assert "last.ckpt is unreadable" in message and "best-004.ckpt" in message
    assert "last.ckpt.unreadable" in message


def test_a_second_unreadable_last_checkpoint_does_not_replace_the_first_kept_one(run_folder):
    out, module = run_folder
    resolve_ckpt_path("last", out, module)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"not a zip")
    assert resolve_ckpt_path("last", out, module).endswith("best-004.ckpt")
    assert (out / "checkpoints" / "last.ckpt.unreadable-1").read_bytes() == b"not a zip"
    assert (out / "checkpoints" / "last.ckpt.unreadable").stat().st_size > 9


def test_with_no_readable_checkpoint_the_error_names_last_and_nothing_moves(run_folder):
    out, module = run_folder
    (out / "checkpoints" / "best-004.ckpt").write_bytes(b"broken too")
    with pytest.raises(DataError, match=r"ckpt_path=last: .*last\.ckpt is truncated"):
        resolve_ckpt_path("last", out, module)
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_a_checkpoint_named_by_path_never_falls_back(run_folder):
    out, module = run_folder
    last = out / "checkpoints" / "last.ckpt"
    with pytest.raises(DataError, match=rf"ckpt_path={last}: {last} is truncated"):
        resolve_ckpt_path(str(last), out, module)
    assert last.exists()
