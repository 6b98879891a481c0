"""Nothing lost: every path that writes or deletes, pointed at a folder holding a user's file,
either refuses with one line or leaves that file byte for byte as it was (docs/reliability.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers.run import run_py
from test_reliability import read_metrics

from cmfnet.cli import main
from cmfnet.data.synth import generate_dataset
from cmfnet.data.synth_cache import ensure_dataset, synthetic_record
from cmfnet.runs.errors import DataError
from cmfnet.runs.ownership import ForeignPathError, claim_folder, mark, owner_kind, remove_owned

TINY = {
    "n_train": 2,
    "n_val": 1,
    "n_test": 1,
    "slices": 3,
    "hr_size": 32,
    "width": 36,
    "seed": 0,
    "source": "phantom",
}
USER_BYTES = b"a researcher's notes \x00\x01 that must survive\n"


def user_folder(parent: Path, name: str = "mine") -> Path:
    """A user's folder: a notes file and a fastMRI-looking split with one file."""
    folder = parent / name
    (folder / "singlecoil_train").mkdir(parents=True)
    (folder / "notes.txt").write_bytes(USER_BYTES)
    (folder / "singlecoil_train" / "file1000001.h5").write_bytes(USER_BYTES * 3)
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------------------------
# The ownership rule
# --------------------------------------------------------------------------------------------


def test_claim_creates_and_marks_a_new_folder_and_adopts_an_empty_one(tmp_path):
    new = claim_folder(tmp_path / "a" / "b", "report", setting="--out")
    assert owner_kind(new) == "report"
    (tmp_path / "empty").mkdir()
    assert (
        owner_kind(claim_folder(tmp_path / "empty", "predictions", setting="--out"))
        == "predictions"
    )
    assert claim_folder(new, "report", setting="--out") == new  # ours: used again


def test_claim_refuses_a_users_folder_and_another_kind_and_writes_nothing(tmp_path):
    folder = user_folder(tmp_path)
    before = snapshot(folder)
    with pytest.raises(
        ForeignPathError, match=r"^--out: .*mine holds files that cmfnet did not write"
    ):
        claim_folder(folder, "report", setting="--out")
    assert snapshot(folder) == before
    run = claim_folder(tmp_path / "run", "run", setting="hydra.run.dir")
    with pytest.raises(ForeignPathError, match="is a cmfnet run folder, not a report folder"):
        claim_folder(run, "report", setting="--out")
    (tmp_path / "file").write_bytes(USER_BYTES)
    with pytest.raises(ForeignPathError, match="is a file, not a folder"):
        claim_folder(tmp_path / "file", "report", setting="--out")
    assert (tmp_path / "file").read_bytes() == USER_BYTES


def test_remove_owned_deletes_only_a_marked_folder_of_its_kind(tmp_path):
    folder = user_folder(tmp_path)
    before = snapshot(folder)
    with pytest.raises(ForeignPathError, match="refusing to delete it"):
        remove_owned(folder, "synthetic")
    (folder / ".cmfnet-owned").write_text("not json")  # a look-alike marker is not ours
    with pytest.raises(ForeignPathError):
        remove_owned(folder, "synthetic")
    (folder / ".cmfnet-owned").unlink()
    assert snapshot(folder) == before
    ours = tmp_path / "ours"
    ours.mkdir()
    mark(ours, "synthetic")
    remove_owned(ours, "synthetic")
    assert not ours.exists()


# --------------------------------------------------------------------------------------------
# The synthetic-data cache
# --------------------------------------------------------------------------------------------


def test_cache_generates_into_a_marked_cache_and_reuses_it(tmp_path):
    cache = tmp_path / "cache"
    root = ensure_dataset(cache, cache / "synthetic" / "tiny", **TINY)
    assert owner_kind(cache) == "cache" and owner_kind(root) == "synthetic"
    assert synthetic_record(root)["counts"] == {"train": 2, "val": 1, "test": 1}
    first = snapshot(root)
    assert ensure_dataset(cache, root, **TINY) == root and snapshot(root) == first
    assert not list(root.parent.glob(".tiny.partial-*"))
    with pytest.raises(DataError, match="made with .* set data.cache_dir to another folder"):
        ensure_dataset(cache, root, **{**TINY, "seed": 1})
    assert snapshot(root) == first


def test_cache_refuses_a_users_folder_as_cache_or_data_set_and_keeps_every_file(tmp_path):
    mine = user_folder(tmp_path)
    before = snapshot(mine)
    with pytest.raises(ForeignPathError, match=r"^data.cache_dir: .*mine holds files"):
        ensure_dataset(mine, mine / "synthetic" / "tiny", **TINY)
    assert snapshot(mine) == before
    cache = tmp_path / "cache"
    claim_folder(cache, "cache", setting="data.cache_dir")
    squatter = user_folder(
        cache / "synthetic", "tiny"
    )  # a user's folder where the data set would go
    squatted = snapshot(squatter)
    with pytest.raises(DataError, match="not a complete synthetic data set made by cmfnet"):
        ensure_dataset(cache, squatter, **TINY)
    assert snapshot(squatter) == squatted
    foreign_partial = user_folder(cache / "synthetic", ".other.partial-123")  # unmarked: left alone
    ensure_dataset(cache, cache / "synthetic" / "other", **TINY)
    assert (foreign_partial / "notes.txt").read_bytes() == USER_BYTES


def test_synth_out_refuses_a_users_folder_and_rewrites_its_own(tmp_path, capsys):
    mine = user_folder(tmp_path)
    before = snapshot(mine)
    assert (
        main(
            [
                "synth",
                "--out",
                str(mine),
                "--source",
                "phantom",
                "--hr-size",
                "32",
                "--width",
                "36",
                "--train",
                "1",
                "--val",
                "0",
                "--test",
                "0",
                "--slices",
                "2",
                "--quiet",
            ]
        )
        == 2
    )
    assert "holds files that cmfnet did not write" in capsys.readouterr().err
    assert snapshot(mine) == before
    ours = generate_dataset(tmp_path / "synth", progress=False)
    assert generate_dataset(ours, progress=False, seed=3) == ours  # its own folder: regenerated


# --------------------------------------------------------------------------------------------
# Single-file outputs: bench json= and evaluate --json
# --------------------------------------------------------------------------------------------


def test_json_outputs_refuse_a_users_file_before_any_work(tmp_path, capsys):
    users = tmp_path / "results.json"
    users.write_bytes(USER_BYTES)
    assert main(["bench", f"json={users}"]) == 2
    assert "was not written by cmfnet bench" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--target",
                str(tmp_path),
                "--predictions",
                str(tmp_path),
                "--json",
                str(users),
            ]
        )
        == 2
    )
    assert "was not written by cmfnet evaluate" in capsys.readouterr().err
    assert users.read_bytes() == USER_BYTES
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({"written_by": "cmfnet bench"}))
    from cmfnet.runs.io import check_writable_file

    check_writable_file(
        ours, "json=", written_by="cmfnet bench"
    )  # a bench's own file may be replaced


# --------------------------------------------------------------------------------------------
# Through run.py: data.root with data=synthetic, run and sweep folders
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_data_root_with_synthetic_data_is_refused_naming_the_option_and_touches_nothing(tmp_path):
    mine = user_folder(tmp_path)
    before = snapshot(mine)
    proc = run_py(
        tmp_path, f"data.root={mine}", "experiment=smoke", "logger=csv", "hydra.run.dir=run"
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: data.root={mine}: "
        "data=synthetic generates its own data set inside data.cache_dir; "
        f"to read this folder use data=fastmri_knee data.root={mine}"
    )
    assert snapshot(mine) == before
    missing = tmp_path / "nowhere" / "data"
    proc = run_py(
        tmp_path, f"data.root={missing}", "experiment=smoke", "logger=csv", "hydra.run.dir=run2"
    )
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_run_and_sweep_folders_refuse_a_users_folder_before_hydra_writes(tmp_path, mode):
    mine = user_folder(tmp_path)
    before = snapshot(mine)
    args = (
        (f"hydra.run.dir={mine}",)
        if mode == "run"
        else ("-m", f"hydra.sweep.dir={mine}", "scale=2,4")
    )
    proc = run_py(tmp_path, *args, "experiment=smoke", "logger=csv")
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: hydra.{mode}.dir: {mine} holds files that cmfnet did not write")
    )
    assert snapshot(mine) == before and not (mine / ".hydra").exists()


@pytest.mark.slow
def test_a_folder_written_by_cmfnet_synth_is_recorded_as_synthetic_data(tmp_path):
    data = generate_dataset(
        tmp_path / "synth", progress=False, hr_size=32, width=36, slices=3, n_train=2
    )
    proc = run_py(
        tmp_path,
        "data=fastmri_knee",
        f"data.root={data}",
        "experiment=smoke",
        "logger=csv",
        "scale=2",
        "hydra.run.dir=run",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_metrics(tmp_path / "run")["data"] == "synthetic"
    assert owner_kind(tmp_path / "run") == "run"
