"""The published data layouts load as they are distributed (issue #14).

- fastMRI knee as the CMF-Net release has it: each split's ``singlecoil_<split>_split_less.csv``
  inside its split folder, rows ``file1000685,file1000568,0.3017`` (names without ``.h5``, a
  score, no header, perhaps a UTF-8 BOM);
- fastMRI knee as MINet has it: the CSV beside the split folders, names with ``.h5``;
- ISLES 2015 SISS: subject folders ``1`` ... ``28``, each with one folder per modality holding
  the NIfTI file of the same name (``VSD.Brain.XX.O.MR_T1.<id>/VSD.Brain.XX.O.MR_T1.<id>.nii``,
  T2, Flair, DWI and ``VSD.Brain_3more.XX.O.OT.<id>`` alike).

The files are written here with the tests' own minimal writers (not ``cmfnet synth``); the
end-to-end tests train ``experiment=smoke`` on them through ``run.py`` with no data override
but the root (ISLES: the crop and slice range, which the tiny volumes cannot meet).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import pytest
from conftest import CONF_DIR, smooth_images, write_fastmri_file
from helpers.run import run_py
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from cmfnet.commands.predict import resolve_inputs
from cmfnet.data.fastmri import FastMRIPairDataset
from cmfnet.data.isles import find_modality
from cmfnet.data.pairs_csv import find_pairs_csv, pairs_csv_candidates, read_pairs_csv
from cmfnet.data.transforms import JointRecSRTransform
from cmfnet.mri.masks import RandomMaskFunc
from cmfnet.runs.errors import DataError

KNEE_HR = 32  # 8x8 LR at the default scale 4
KNEE_COLS = 40
KNEE_SLICES = 3
KNEE_PAIRS = {"train": 2, "val": 1}
ISLES_SHAPE = (36, 36, 2)  # in plane >= the 32x32 crop the smoke run is given
ISLES_SUBJECTS = 28
ISLES_MODALITIES = ("MR_DWI", "MR_Flair", "MR_T1", "MR_T2")
BOM = "\ufeff"


# --------------------------------------------------------------------------------------------
# writers of the published layouts
# --------------------------------------------------------------------------------------------


def write_knee_split(root: Path, split: str, n_pairs: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n_pairs`` PD/PD-FS volumes named like fastMRI's (``file1000685.h5``) in
    ``root/singlecoil_<split>``; returns the (pd, pdfs) names without ``.h5``."""
    first = {"train": 1000000, "val": 1002000}[split]
    rng = np.random.default_rng(seed + first)
    folder = root / f"singlecoil_{split}"
    folder.mkdir(parents=True)
    stems = []
    for i in range(n_pairs):
        pd, pdfs = f"file{first + 2 * i}", f"file{first + 2 * i + 1}"
        write_fastmri_file(
            folder / f"{pd}.h5", smooth_images(rng, KNEE_SLICES, KNEE_HR), cols=KNEE_COLS
        )
        write_fastmri_file(
            folder / f"{pdfs}.h5",
            smooth_images(rng, KNEE_SLICES, KNEE_HR),
            cols=KNEE_COLS,
            acquisition="CORPDFS_FBK",
        )
        stems.append((pd, pdfs))
    return stems


def write_pairs_csv(
    path: Path,
    stems: Sequence[tuple[str, str]],
    h5: bool = False,
    bom: bool = False,
    header: str = "",
) -> Path:
    """A pairing CSV of ``pd,pdfs,score`` rows as published (names without ``.h5`` unless
    ``h5``)."""
    suffix = ".h5" if h5 else ""
    rows = ([header] if header else []) + [
        f"{pd}{suffix},{pdfs}{suffix},0.{3017 + i}" for i, (pd, pdfs) in enumerate(stems)
    ]
    path.write_text((BOM if bom else "") + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def release_layout(root: Path) -> Path:
    """fastMRI knee as the CMF-Net release reads it: CSV inside each split folder, no .h5, a BOM."""
    for split, n_pairs in KNEE_PAIRS.items():
        stems = write_knee_split(root, split, n_pairs)
        write_pairs_csv(
            root / f"singlecoil_{split}" / f"singlecoil_{split}_split_less.csv", stems, bom=True
        )
    return root


def beside_layout(root: Path) -> Path:
    """fastMRI knee as MINet reads it: CSV beside each split folder, names with .h5, a header."""
    for split, n_pairs in KNEE_PAIRS.items():
        stems = write_knee_split(root, split, n_pairs)
        write_pairs_csv(
            root / f"singlecoil_{split}_split_less.csv",
            stems,
            h5=True,
            header="pd_file,pdfs_file,score",
        )
    return root


def isles_file(root: Path, subject: int, modality: str) -> Path:
    """Where SISS keeps one modality of a subject: a folder named like its file (ids differ per
    file)."""
    volume_id = 70000 + 10 * subject + (ISLES_MODALITIES + ("OT",)).index(modality)
    prefix = "VSD.Brain_3more.XX.O" if modality == "OT" else "VSD.Brain.XX.O"
    name = f"{prefix}.{modality}.{volume_id}"
    return root / str(subject) / name / f"{name}.nii"


def isles_as_distributed(root: Path, subjects: int = ISLES_SUBJECTS) -> Path:
    """The SISS training set's layout: ``root/1`` ... ``root/28``, five modality folders each."""
    rng = np.random.default_rng(3)
    for subject in range(1, subjects + 1):
        for modality in ISLES_MODALITIES:
            slices = np.abs(smooth_images(rng, ISLES_SHAPE[2], ISLES_SHAPE[0])).transpose(1, 2, 0)
            volume = np.round(slices * 1000).astype(np.int16)
            path = isles_file(root, subject, modality)
            path.parent.mkdir(parents=True)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
        lesion = isles_file(root, subject, "OT")
        lesion.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.zeros(ISLES_SHAPE, np.uint8), np.eye(4)), lesion)
    return root


def knee_dataset(folder: Path, pairs_csv) -> FastMRIPairDataset:
    transform = JointRecSRTransform(RandomMaskFunc([0.08], [4], seed=0), seed_masks_by_name=True)
    return FastMRIPairDataset(folder, pairs_csv, scale=4, transform=transform)


# --------------------------------------------------------------------------------------------
# the pairing CSV reader
# --------------------------------------------------------------------------------------------


def test_reader_takes_published_rows_without_h5_with_a_bom_and_a_score(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        f"{BOM}file1000685,file1000568,0.3017\r\nfile1001.h5,file1002,0.5\r\n", encoding="utf-8"
    )
    assert read_pairs_csv(path) == [
        ("file1000685.h5", "file1000568.h5"),
        ("file1001.h5", "file1002.h5"),
    ]
    path.write_text("a,b,not a number\n\nc,d\n")  # a third column is ignored, whatever it holds
    assert read_pairs_csv(path) == [("a.h5", "b.h5"), ("c.h5", "d.h5")]


@pytest.mark.parametrize(
    "header, row, bom",
    [
        ("pd_file,pdfs_file,score", "a,b,0.3", False),
        ("pdfs_file,pd_file,score", "b,a,0.3", True),
        ("score,target,aux", "0.3,b.h5,a", True),
        ("PDFS,PD", "b.h5,a.h5", False),
    ],
)
def test_reader_recognises_a_header_by_its_column_names_in_either_order(tmp_path, header, row, bom):
    path = tmp_path / "p.csv"
    path.write_text(f"{BOM if bom else ''}{header}\n{row}\n", encoding="utf-8")
    assert read_pairs_csv(path) == [("a.h5", "b.h5")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b\nc,b.h5\n", r"p\.csv: target file b\.h5 is listed in more than one pair"),
        ("a.h5,a\n", r"p\.csv: line 1 pairs a\.h5 with itself"),
        ("score,pdfs_file\nb,a\n", r"p\.csv: line 1 is a header but does not name both"),
        (
            "a,b\nc\n",
            r"p\.csv: line 2 needs 'pd_file,pdfs_file\[,score\]' \(names with or without \.h5\)",
        ),
        ("a,\n", r"p\.csv: line 1 needs"),
        ("a,sub/\n", r"p\.csv: line 1 needs"),
        ("a,..\n", r"p\.csv: line 1 needs"),
        (
            'a,"b\nc"\n',
            r"p\.csv: line 1 needs .*'b\\nc'",
        ),  # a name across lines: refused, message one line
        ("pd_file,pdfs_file\n", r"p\.csv: no pairs listed"),
    ],
)
def test_reader_still_refuses_bad_lists(tmp_path, text, message):
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_pairs_csv(path)
    assert "\n" not in str(err.value)


def test_dataset_opens_names_without_h5_inside_the_split_folder(tmp_path):
    root = release_layout(tmp_path / "knee")
    data = knee_dataset(root / "singlecoil_train", None)
    assert data.pairs_csv == root / "singlecoil_train" / "singlecoil_train_split_less.csv"
    assert [target.path.name for _, target in data.pairs] == ["file1000001.h5", "file1000003.h5"]
    assert len(data) == 2 * KNEE_SLICES and data[0].sr_target.shape == (1, KNEE_HR, KNEE_HR)


def test_a_listed_file_that_is_missing_names_it_and_the_csv(tmp_path):
    root = release_layout(tmp_path / "knee")
    folder = root / "singlecoil_val"
    (folder / "file1002001.h5").unlink()
    csv_path = folder / "singlecoil_val_split_less.csv"
    missing = rf"^{folder}/file1002001\.h5: file not found \(listed in {csv_path}\)$"
    with pytest.raises(DataError, match=missing):
        knee_dataset(folder, None)
    csv_path.write_text(
        "first,second\n" + csv_path.read_text(encoding="utf-8-sig")
    )  # an unknown header
    with pytest.raises(
        DataError, match=rf"^{folder}/first\.h5: file not found \(listed in {csv_path}\)$"
    ):
        knee_dataset(folder, None)


# --------------------------------------------------------------------------------------------
# where the CSV is looked for
# --------------------------------------------------------------------------------------------


def test_candidates_are_inside_the_split_folder_then_beside_it(tmp_path):
    folder = tmp_path / "knee" / "singlecoil_val"
    folder.mkdir(parents=True)
    inside = folder / "singlecoil_val_split_less.csv"
    beside = tmp_path / "knee" / "singlecoil_val_split_less.csv"
    assert pairs_csv_candidates(folder) == [inside, beside]
    assert pairs_csv_candidates(folder / ".." / "singlecoil_val") == [inside, beside]
    with pytest.raises(DataError, match=rf"^{inside}: pairing CSV not found, nor at {beside}$"):
        find_pairs_csv(None, folder)
    write_pairs_csv(beside, [("a", "b")], h5=True)
    assert find_pairs_csv(None, folder) == beside
    write_pairs_csv(inside, [("a", "b")], bom=True)  # the same pairs written differently: agreed
    assert find_pairs_csv(None, folder) == inside
    assert find_pairs_csv([beside, inside], folder) == beside
    write_pairs_csv(inside, [("a", "c")])
    with pytest.raises(
        DataError, match=rf"^{beside}: lists other pairs than {inside}; remove one or name"
    ):
        find_pairs_csv(None, folder)
    assert (
        find_pairs_csv(str(tmp_path / "mine.csv"), folder) == tmp_path / "mine.csv"
    )  # one path: as given
    with pytest.raises(DataError, match=r"mine\.csv: pairing CSV not found$"):
        knee_dataset(folder, tmp_path / "mine.csv")


def test_the_fastmri_config_lists_both_candidates(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=fastmri_knee", f"data.root={tmp_path}"])
    for split in ("train", "val", "test"):
        name = "train" if split == "train" else "val"
        assert list(cfg.data.splits[split].pairs_csv) == [
            f"{tmp_path}/singlecoil_{name}/singlecoil_{name}_split_less.csv",
            f"{tmp_path}/singlecoil_{name}_split_less.csv",
        ]


def test_predict_default_csv_is_inside_the_folder_then_beside_it(tmp_path):
    args = argparse.Namespace(
        split=None, data=str(tmp_path / "singlecoil_val"), csv=None, target_key=None
    )
    (tmp_path / "singlecoil_val").mkdir()
    inside = tmp_path / "singlecoil_val" / "singlecoil_val_split_less.csv"
    beside = tmp_path / "singlecoil_val_split_less.csv"
    with pytest.raises(
        ValueError, match=rf"^{inside}: pairing CSV not found, nor at {beside} \(no --csv"
    ):
        resolve_inputs(args, {}, tmp_path / "x.ckpt")
    write_pairs_csv(beside, [("a", "b")])
    assert resolve_inputs(args, {}, tmp_path / "x.ckpt").pairs_csv == beside
    write_pairs_csv(inside, [("a", "b")])
    assert resolve_inputs(args, {}, tmp_path / "x.ckpt").pairs_csv == inside


# --------------------------------------------------------------------------------------------
# ISLES file patterns
# --------------------------------------------------------------------------------------------


def test_isles_patterns_match_the_files_only(tmp_path):
    root = isles_as_distributed(tmp_path / "siss", subjects=1)
    subject = root / "1"
    t1 = find_modality(subject, "*.MR_T1.*")
    assert t1 == isles_file(root, 1, "MR_T1") and t1.is_file()
    assert find_modality(subject, "*.MR_T2.*") == isles_file(root, 1, "MR_T2")
    (t1.parent / f"._{t1.name}").write_bytes(b"\0" * 4096)  # macOS archive copy: never a volume
    extra = subject / "VSD.Brain.XX.O.MR_T1c.1" / "VSD.Brain.XX.O.MR_T1c.1.nii"  # another modality
    extra.parent.mkdir()
    extra.write_bytes(t1.read_bytes())
    assert find_modality(subject, "*.MR_T1.*") == t1
    gz = t1.parent / f"{t1.name}.gz"
    gz.write_bytes(b"")
    with pytest.raises(
        DataError, match=r"found 2: VSD\.Brain\.XX\.O\.MR_T1\.\d+/\S+\.nii, \S+\.nii\.gz$"
    ):
        find_modality(subject, "*.MR_T1.*")


# --------------------------------------------------------------------------------------------
# end to end: run.py experiment=smoke on each layout
# --------------------------------------------------------------------------------------------


def run_smoke(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python run.py experiment=smoke logger=csv hydra.run.dir=run OVERRIDES`` in ``cwd``."""
    return run_py(
        cwd, "experiment=smoke", "logger=csv", "hydra.run.dir=run", *overrides, cache=cwd / "cache"
    )


def assert_trained(proc: subprocess.CompletedProcess, run: Path) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and np.isfinite(metrics["sr_psnr"])
    return metrics


@pytest.mark.slow
def test_release_layout_trains_and_predicts_as_is(tmp_path):
    from cmfnet.cli import main

    root = release_layout(tmp_path / "knee")
    assert_trained(run_smoke(tmp_path, "data=fastmri_knee", f"data.root={root}"), tmp_path / "run")
    best = next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    out = tmp_path / "pred"  # predict's default CSV: the one inside the folder
    assert (
        main(
            [
                "predict",
                str(best),
                "--data",
                str(root / "singlecoil_val"),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert [p.name for p in out.glob("*.h5")] == ["file1002001.h5"]


@pytest.mark.slow
def test_beside_layout_with_h5_names_trains(tmp_path):
    root = beside_layout(tmp_path / "knee")
    assert_trained(run_smoke(tmp_path, "data=fastmri_knee", f"data.root={root}"), tmp_path / "run")


@pytest.mark.slow
def test_no_pairing_csv_is_one_line_listing_every_path_tried(tmp_path):
    root = tmp_path / "knee"
    for split, n_pairs in KNEE_PAIRS.items():
        write_knee_split(root, split, n_pairs)
    proc = run_smoke(tmp_path, "data=fastmri_knee", f"data.root={root}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    inside = root / "singlecoil_train" / "singlecoil_train_split_less.csv"
    beside = root / "singlecoil_train_split_less.csv"
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: {inside}: pairing CSV not found, nor at {beside}"
    )


@pytest.mark.slow
def test_isles_as_distributed_trains(tmp_path):
    root = isles_as_distributed(tmp_path / "siss")
    crop = f"[{ISLES_SHAPE[0] - 4},{ISLES_SHAPE[1] - 4}]"
    proc = run_smoke(
        tmp_path,
        "data=isles",
        f"data.root={root}",
        f"data.splits.train.hr_size={crop}",
        f"data.splits.train.slice_range=[0,{ISLES_SHAPE[2]}]",
    )
    metrics = assert_trained(proc, tmp_path / "run")
    assert metrics["data"] == "isles"
