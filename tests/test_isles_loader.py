import nibabel as nib
import numpy as np
import pytest

from cmfnet.data.isles import ISLESPairDataset
from cmfnet.data.transforms import JointRecSRTransform
from cmfnet.mri.masks import RandomMaskFunc
from cmfnet.runs.errors import DataError


def _dataset(root, **kwargs):
    settings = dict(subjects=None, scale=2, hr_size=(16, 16), slice_range=(2, 8))
    settings.update(kwargs)
    transform = JointRecSRTransform(RandomMaskFunc([0.08], [4], seed=0), seed_masks_by_name=True)
    return ISLESPairDataset(root, transform=transform, **settings)


def test_isles_pairs_t1_with_t2_and_crops(isles_root):
    data = _dataset(isles_root)
    assert len(data) == 2 * 6
    sample = data[7]
    assert sample.fname.startswith("VSD.Brain.XX.O.MR_T2.200") and sample.slice_idx == 3
    assert sample.sr_target.shape == (1, 16, 16) and sample.target_input.shape == (1, 8, 8)
    t2 = nib.load(str(next((isles_root / "2").rglob("*MR_T2*.nii")))).get_fdata()[4:20, 4:20, 3]
    np.testing.assert_allclose(
        (sample.sr_target[0] * sample.std + sample.mean).numpy(), t2, rtol=1e-4, atol=1e-5
    )


def test_isles_subject_split_and_errors(isles_root):
    assert len(_dataset(isles_root, subjects=["2"])) == 6
    with pytest.raises(DataError, match="subject folder not found"):
        _dataset(isles_root, subjects=["9"])
    with pytest.raises(
        DataError, match=r"data.hr_size \(32, 32\) exceeds the in-plane size \(24, 24\)"
    ):
        _dataset(isles_root, hr_size=(32, 32))
    with pytest.raises(DataError, match="scale=3 does not divide"):
        _dataset(isles_root, scale=3)


def test_isles_mismatched_and_broken_volumes(isles_root):
    t1 = next((isles_root / "1").rglob("*MR_T1*.nii"))
    nib.save(nib.Nifti1Image(np.zeros((20, 24, 10), np.float32), np.eye(4)), t1)
    with pytest.raises(DataError, match="differs from its pair"):
        _dataset(isles_root)
    t1.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable NIfTI file"):
        _dataset(isles_root)


def test_isles_nan_slice_is_reported(isles_root):
    t2 = next((isles_root / "1").rglob("*MR_T2*.nii"))
    volume = np.ones((24, 24, 10), np.float32)
    volume[5, 5, 2] = np.nan
    nib.save(nib.Nifti1Image(volume, np.eye(4)), t2)
    with pytest.raises(DataError, match="slice 2 contains NaN or inf"):
        _dataset(isles_root)[0]
