"""data=ixi: IXI NIfTI files as distributed (per-contrast archive folders or one folder), the
seeded subject split, T1 -> T2 resampling through the affines, malformed input, and an end-to-end
smoke run. The files are written here with nibabel directly (not through cmfnet)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO

from cmfnet.data.ixi import IXIPairDataset, resample_slice, split_subjects
from cmfnet.data.transforms import JointRecSRTransform
from cmfnet.lit.datamodule import suggest_data_choice
from cmfnet.mri.masks import RandomMaskFunc
from cmfnet.runs.errors import DataError

T2_SHAPE = (24, 24, 8)
T1_SHAPE = (8, 24, 30)
#: T2 voxel (i, j, k) -> scanner mm: 1 x 1 x 1.5 mm, origin near the centre.
T2_AFFINE = np.array([[1.0, 0, 0, -12], [0, 1, 0, -12], [0, 0, 1.5, -6], [0, 0, 0, 1]])
#: T2 voxel (i, j, k) -> T1 voxel (p, q, r) = (k, 23 - i, j + 3): axes permuted, one flipped,
#: one shifted (T1 is a separate, sagittal acquisition in IXI).
T2_TO_T1 = np.array([[0.0, 0, 1, 0], [-1, 0, 0, 23], [0, 1, 0, 3], [0, 0, 0, 1]])
T1_AFFINE = T2_AFFINE @ np.linalg.inv(T2_TO_T1)
SUBJECTS = [f"IXI{n:03d}" for n in (2, 12, 13, 14, 15, 16, 17)]
NO_T1 = "IXI017"  # has T2 and PD only
T1_ONLY = "IXI099"  # has T1 only: not a subject of the split


def ixi_name(subject: str, contrast: str) -> str:
    return f"{subject}-Guys-{int(subject[3:]) + 800:04d}-{contrast}.nii.gz"


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), str(path))
    return path


def write_ixi(root: Path, per_contrast_folders: bool = True) -> dict[tuple[str, str], Path]:
    """IXI-named T1/T2/PD volumes (and a DTI file that must be ignored); returns
    ``{(subject, contrast): path}``."""
    rng = np.random.default_rng(3)
    written = {}
    for subject in [*SUBJECTS, T1_ONLY]:
        for contrast in ("T1", "T2", "PD"):
            if (subject == NO_T1 and contrast == "T1") or (subject == T1_ONLY and contrast != "T1"):
                continue
            shape, affine = (T1_SHAPE, T1_AFFINE) if contrast == "T1" else (T2_SHAPE, T2_AFFINE)
            folder = root / f"IXI-{contrast}" if per_contrast_folders else root
            path = folder / ixi_name(subject, contrast)
            written[subject, contrast] = write_nifti(path, 1 + 100 * rng.random(shape), affine)
    write_nifti(root / "IXI002-Guys-0802-DTI-00.nii.gz", np.ones(T2_SHAPE), T2_AFFINE)
    return written


@pytest.fixture
def ixi_root(tmp_path: Path) -> Path:
    root = tmp_path / "ixi"
    write_ixi(root)
    return root


def dataset(root: Path, split: str = "train", **kwargs) -> IXIPairDataset:
    settings = dict(
        scale=2, hr_size=(24, 24), slice_range=(0, 8), rot90=0, fractions=(0.5, 0.25, 0.25)
    )
    settings.update(kwargs)
    transform = JointRecSRTransform(RandomMaskFunc([0.08], [4], seed=0), seed_masks_by_name=True)
    return IXIPairDataset(root, split=split, transform=transform, **settings)


def expected_t1_on_t2(t1: np.ndarray, k: int) -> np.ndarray:
    """T2 slice k of a T1 volume related by :data:`T2_TO_T1` (every T2 voxel lands on a T1
    voxel, so no interpolation is involved)."""
    i, j = np.meshgrid(np.arange(T2_SHAPE[0]), np.arange(T2_SHAPE[1]), indexing="ij")
    return t1[k, 23 - i, j + 3]


def test_resample_slice_maps_voxels_through_the_affines():
    t1 = np.random.default_rng(0).random(T1_SHAPE).astype(np.float32)
    mapping = np.linalg.inv(T1_AFFINE) @ T2_AFFINE
    np.testing.assert_allclose(mapping, T2_TO_T1, atol=1e-12)
    for k in (0, 5):
        np.testing.assert_allclose(
            resample_slice(t1, mapping, T2_SHAPE[:2], k), expected_t1_on_t2(t1, k), atol=1e-6
        )
    # half a voxel along T1's third axis: trilinear gives the mean of the two neighbours; the
    # last column would read past the volume's edge and blends with the zero outside
    shifted = T2_TO_T1.copy()
    shifted[2, 3] += 0.5
    got = resample_slice(t1, shifted, T2_SHAPE[:2], 2)
    i, j = np.meshgrid(np.arange(24), np.arange(24), indexing="ij")
    want = (t1[2, 23 - i, j + 3] + t1[2, 23 - i, np.minimum(j + 4, T1_SHAPE[2] - 1)]) / 2
    np.testing.assert_allclose(got, want, atol=1e-6)
    # outside the T1 field of view: zero
    far = T2_TO_T1.copy()
    far[0, 3] += 100
    assert not resample_slice(t1, far, T2_SHAPE[:2], 0).any()


@pytest.mark.parametrize("rot90", [0, 1])
def test_dataset_pairs_resampled_t1_with_t2(tmp_path, rot90):
    files = write_ixi(tmp_path / "ixi", per_contrast_folders=False)
    data = dataset(tmp_path / "ixi", subjects=["IXI013"], rot90=rot90)
    assert len(data) == 8 and data.pair_paths(0) == (
        files["IXI013", "T1"],
        files["IXI013", "T2"],
    )
    t1 = nib.load(str(files["IXI013", "T1"])).get_fdata()
    t2 = nib.load(str(files["IXI013", "T2"])).get_fdata()
    target, aux = data.hr_slices(0, 5)
    np.testing.assert_allclose(aux, np.rot90(expected_t1_on_t2(t1, 5), rot90), rtol=1e-6)
    np.testing.assert_allclose(target, np.rot90(t2[:, :, 5], rot90), rtol=1e-6)
    sample = data[5]
    assert sample.fname == ixi_name("IXI013", "T2") and sample.slice_idx == 5
    assert sample.sr_target.shape == (1, 24, 24) and sample.aux_input.shape == (1, 12, 12)
    np.testing.assert_allclose(
        (sample.sr_target[0] * sample.std + sample.mean).numpy(), target, rtol=1e-4
    )


def test_pd_as_auxiliary_is_read_on_the_shared_grid(ixi_root):
    data = dataset(ixi_root, subjects=["IXI002"], aux_contrast="PD", hr_size=(32, 20))
    pd = nib.load(str(data.pair_paths(0)[0])).get_fdata()
    assert data.pair_paths(0)[0].name == ixi_name("IXI002", "PD")
    _, aux = data.hr_slices(0, 3)
    assert aux.shape == (32, 20)
    np.testing.assert_allclose(aux[4:28], pd[:, 2:22, 3], rtol=1e-6)  # zero-padded, cropped
    assert not aux[:4].any() and not aux[28:].any()


def test_seeded_split_keeps_subjects_apart_and_leaves_out_unpaired(tmp_path, caplog):
    flat, archives = tmp_path / "flat", tmp_path / "archives"
    write_ixi(flat, per_contrast_folders=False)
    write_ixi(archives)
    parts = split_subjects(SUBJECTS, (0.5, 0.25, 0.25), seed=0)
    assert sorted(sum(parts.values(), [])) == SUBJECTS
    assert [len(parts[s]) for s in ("train", "val", "test")] == [4, 1, 2]
    assert parts == split_subjects(list(reversed(SUBJECTS)), (0.5, 0.25, 0.25), seed=0)
    assert any(split_subjects(SUBJECTS, (0.5, 0.25, 0.25), seed=s) != parts for s in range(1, 4))
    split_of = {s: split for split, ids in parts.items() for s in ids}
    for root in (flat, archives):
        with caplog.at_level(logging.INFO, logger="cmfnet.data.ixi"):
            caplog.clear()
            read = {split: dataset(root, split).subject_ids for split in parts}
        assert read == {split: [s for s in ids if s != NO_T1] for split, ids in parts.items()}, root
        left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
        assert left_out == [
            f"IXI {split_of[NO_T1]}: 1 of {len(parts[split_of[NO_T1]])} subjects have no T1 "
            f"file and are left out: {NO_T1}"
        ]
    with pytest.raises(DataError, match=r"fractions: \[1.0, 0.0, 0.0\] give the val split none"):
        dataset(flat, "val", fractions=(1, 0, 0))
    with pytest.raises(DataError, match="summing to 1"):
        dataset(flat, "val", fractions=(0.5, 0.5, 0.5))


def test_listed_subject_without_a_contrast_is_named(ixi_root):
    with pytest.raises(DataError, match=f"subject {NO_T1} .*needs one {NO_T1}-.*-T1.nii.gz"):
        dataset(ixi_root, subjects=["IXI002", NO_T1])
    with pytest.raises(DataError, match=f"subject {T1_ONLY} .*-T2.nii.gz file, found 0"):
        dataset(ixi_root, subjects=[T1_ONLY])


def test_truncated_nifti_is_named(ixi_root):
    path = next(ixi_root.rglob(ixi_name("IXI002", "T1")))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{path}: (truncated|not a readable)") as err:
        dataset(ixi_root, subjects=["IXI002"])
    assert "\n" not in str(err.value)


def test_affines_that_disagree_are_refused(ixi_root):
    t1 = next(ixi_root.rglob(ixi_name("IXI002", "T1")))
    volume = np.ones(T1_SHAPE, np.float32)
    moved = T1_AFFINE.copy()
    moved[:3, 3] += 200  # 20 cm away: no T2 slice meets the T1 field of view
    write_nifti(t1, volume, moved)
    with pytest.raises(DataError, match=rf"{t1}: its field of view covers 0% of slices 0-7"):
        dataset(ixi_root, subjects=["IXI002"])
    half = T1_AFFINE.copy()
    half[2, 3] += 6  # the T1 slab now covers T2 slices 4-7 of 0-7 (1.5 mm slices): half
    write_nifti(t1, volume, half)
    assert len(dataset(ixi_root, subjects=["IXI002"], min_overlap=0.5)) == 8
    with pytest.raises(DataError, match="covers 50%.*min_overlap=0.6"):
        dataset(ixi_root, subjects=["IXI002"], min_overlap=0.6)
    singular = nib.Nifti1Image(volume, np.eye(4))
    flat = T1_AFFINE.copy()
    flat[:, 2] = 0
    singular.set_qform(None, code=0)
    singular.set_sform(flat, code=1)
    nib.save(singular, str(t1))
    with pytest.raises(DataError, match=rf"{t1}: affine is singular"):
        dataset(ixi_root, subjects=["IXI002"])


@pytest.mark.parametrize("contrast", ["T1", "T2"])
def test_nan_voxels_are_named(ixi_root, contrast):
    path = next(ixi_root.rglob(ixi_name("IXI002", contrast)))
    image = nib.load(str(path))
    volume = image.get_fdata().astype(np.float32)
    volume[3, 4, 5] = np.nan
    write_nifti(path, volume, image.affine)
    data = dataset(ixi_root, subjects=["IXI002"])
    with pytest.raises(DataError, match=rf"{path}: voxel \(3, 4, 5\) is NaN or inf"):
        data[0]


def test_gzip_stream_with_a_bad_crc_is_named(ixi_root):
    path = next(ixi_root.rglob(ixi_name("IXI002", "T2")))
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # the CRC-32 in the gzip trailer
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=rf"{path}: truncated or corrupted gzip"):
        dataset(ixi_root, subjects=["IXI002"])


def test_an_ixi_folder_is_recognised_in_messages(tmp_path):
    write_ixi(tmp_path / "one", per_contrast_folders=False)
    write_ixi(tmp_path / "archives")
    for root in (tmp_path / "one", tmp_path / "archives"):
        assert suggest_data_choice(root) == f"data=ixi data.root={root}"


@pytest.mark.slow
def test_smoke_run_trains_on_ixi_as_distributed(tmp_path):
    root = tmp_path / "IXI"
    write_ixi(root)
    before = sorted(root.rglob("*"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(CMFNET_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "run.py"),
            "experiment=smoke",
            "logger=none",
            "hydra.run.dir=run",
            "data=ixi",
            f"data.root={root}",
            "data.splits.train.hr_size=[32,32]",  # 24x24 slices zero-padded; 8x8 LR at x4
            "data.splits.train.slice_range=[0,8]",
            "data.splits.train.slice_step=2",
            "data.splits.train.fractions=[0.5,0.25,0.25]",  # each split holds a paired subject
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["data"] == "ixi"
    assert np.isfinite(metrics["sr_psnr"])
    assert sorted(root.rglob("*")) == before  # nothing written into the data folder
