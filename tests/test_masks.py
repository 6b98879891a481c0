import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

subsample = pytest.importorskip("fastmri.data.subsample")

from cmfnet.mri import masks  # noqa: E402

PAIRS = [
    (masks.RandomMaskFunc, subsample.RandomMaskFunc),
    (masks.EquispacedMaskFractionFunc, subsample.EquispacedMaskFractionFunc),
    (masks.EquispacedMaskFunc, subsample.EquiSpacedMaskFunc),
]


@settings(max_examples=40, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    cols=st.integers(16, 400),
    rows=st.integers(1, 64),
    owner_seed=st.integers(0, 2**31 - 1),
    call_seed=st.one_of(
        st.none(), st.integers(0, 2**31 - 1), st.tuples(st.integers(0, 255), st.integers(0, 255))
    ),
    accel_set=st.sampled_from([([0.08], [4]), ([0.04], [8]), ([0.08, 0.04], [4, 8]), ([0.1], [3])]),
)
def test_masks_equal_fastmri_bit_for_bit(pair, cols, rows, owner_seed, call_seed, accel_set):
    ours_cls, ref_cls = pair
    cfs, accs = accel_set
    ours, ref = ours_cls(cfs, accs, seed=owner_seed), ref_cls(cfs, accs, seed=owner_seed)
    for _ in range(2):  # the second call checks the generator state is advanced/restored alike
        shape = (1, rows, cols, 2)
        mask, num_low = ours(shape, seed=call_seed)
        ref_mask, ref_low = ref(shape, seed=call_seed)
        assert num_low == ref_low
        assert mask.dtype == ref_mask.dtype == torch.float32
        assert mask.shape == ref_mask.shape == (1, 1, cols, 1)
        assert torch.equal(mask, ref_mask)


def test_any_combination_and_offset_match_fastmri():
    ours = masks.EquispacedMaskFractionFunc(
        [0.08, 0.04], [4, 8], allow_any_combination=True, seed=3
    )
    ref = subsample.EquispacedMaskFractionFunc(
        [0.08, 0.04], [4, 8], allow_any_combination=True, seed=3
    )
    for offset in (None, 0, 1, 2):
        assert torch.equal(
            ours((1, 5, 96, 2), offset=offset)[0], ref((1, 5, 96, 2), offset=offset)[0]
        )


def test_seeded_call_restores_the_generator_state():
    func = masks.RandomMaskFunc([0.08], [4], seed=0)
    first = func((1, 8, 64, 2))[0]
    func = masks.RandomMaskFunc([0.08], [4], seed=0)
    func((1, 8, 64, 2), seed=masks.seed_from_name("file1.h5"))
    assert torch.equal(func((1, 8, 64, 2))[0], first)


def test_seed_from_name_uses_the_file_name_not_the_path():
    assert masks.seed_from_name("/a/b/file1.h5") == masks.seed_from_name("/other/file1.h5")
    assert masks.seed_from_name("file1.h5") != masks.seed_from_name("file2.h5")


def test_center_fraction_convention():
    assert masks.center_fraction_for(4) == 0.08
    assert masks.center_fraction_for(8) == 0.04
    with pytest.raises(ValueError, match="accel must be > 1"):
        masks.center_fraction_for(1)


@pytest.mark.parametrize(
    "cfs, accs, message",
    [
        ([0.08], [1], "acceleration must be > 1"),
        ([0.0], [4], r"center fraction must be in \(0, 1\)"),
        ([1.0], [4], r"center fraction must be in \(0, 1\)"),
        ([0.08, 0.04], [4], "one per acceleration"),
    ],
)
def test_bad_mask_settings_raise_clear_errors(cfs, accs, message):
    with pytest.raises(ValueError, match=message):
        masks.RandomMaskFunc(cfs, accs)


def test_fixed_mask_from_file(tmp_path):
    columns = np.zeros(32)
    columns[14:19] = 1
    columns[::4] = 1
    path = tmp_path / "mask.npy"
    np.save(path, columns)
    func = masks.FixedMaskFunc(path)
    mask, num_low = func((1, 10, 32, 2))
    assert mask.shape == (1, 1, 32, 1)
    np.testing.assert_array_equal(mask.reshape(-1).numpy(), columns)
    assert num_low == 5
    assert torch.equal(func((1, 10, 32, 2), seed=1)[0], mask)
    with pytest.raises(ValueError, match="has 32 columns but the k-space has 30"):
        func((1, 10, 30, 2))


def test_fixed_mask_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no mask file"):
        masks.FixedMaskFunc(tmp_path / "missing.npy")
    np.save(tmp_path / "values.npy", np.array([0, 0.5, 1]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        masks.FixedMaskFunc(tmp_path / "values.npy")
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(ValueError, match=r"text\.npy is not a \.npy file \(no NumPy header\)$"):
        masks.FixedMaskFunc(tmp_path / "text.npy")
    np.save(tmp_path / "whole.npy", np.ones(64))
    (tmp_path / "truncated.npy").write_bytes((tmp_path / "whole.npy").read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated\.npy is not a readable \.npy array"):
        masks.FixedMaskFunc(tmp_path / "truncated.npy")


def release_style_mask(columns: np.ndarray, rows: int = 6) -> np.ndarray:
    """The CMF-Net release's layout: a 2-D (rows, columns) array, every column all 0 or all 1."""
    return np.tile(columns, (rows, 1))


def test_fixed_mask_takes_the_releases_2d_npy_and_t2nets_mat_files(tmp_path):
    import h5py
    import scipy.io

    columns = np.zeros(32)
    columns[14:19] = 1
    columns[::4] = 1
    reference = masks.FixedMaskFunc(np.save(tmp_path / "one.npy", columns) or tmp_path / "one.npy")
    expected, low = reference((1, 10, 32, 2))
    np.save(tmp_path / "release.npy", release_style_mask(columns))
    scipy.io.savemat(tmp_path / "t2net.mat", {"mask": release_style_mask(columns)})
    scipy.io.savemat(tmp_path / "two.mat", {"mask": release_style_mask(columns), "other": [[3.0]]})
    with h5py.File(tmp_path / "v73.mat", "w", userblock_size=512) as mat:
        mat["mask"] = release_style_mask(columns).T  # MATLAB v7.3 stores arrays column-major
    with open(tmp_path / "v73.mat", "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file")
    for name, key in [
        ("release.npy", None),
        ("t2net.mat", None),
        ("two.mat", "mask"),
        ("v73.mat", None),
    ]:
        func = masks.FixedMaskFunc(tmp_path / name, key=key)
        mask, num_low = func((1, 10, 32, 2))
        assert torch.equal(mask, expected) and num_low == low, name
    with pytest.raises(
        ValueError, match=r"two\.mat holds 2 numeric variables .*name the mask with mask\.key"
    ):
        masks.FixedMaskFunc(tmp_path / "two.mat")
    with pytest.raises(ValueError, match=r"^mask\.key: .*two\.mat has no numeric variable 'msk'"):
        masks.FixedMaskFunc(tmp_path / "two.mat", key="msk")


def test_fixed_mask_refuses_a_2d_mask_whose_columns_vary_and_a_width_that_does_not_fit(tmp_path):
    columns = np.zeros(32)
    columns[12:20] = 1
    mixed = release_style_mask(columns)
    mixed[3, 0] = 1
    np.save(tmp_path / "mixed.npy", mixed)
    with pytest.raises(
        ValueError,
        match=r"mixed\.npy is a 2-D mask whose columns are not constant \(row 3 differs from "
        r"row 0\)$",
    ):
        masks.FixedMaskFunc(tmp_path / "mixed.npy")
    np.save(tmp_path / "rows.npy", release_style_mask(columns, rows=32).T)
    with pytest.raises(ValueError, match=r"its rows are constant instead: transpose it"):
        masks.FixedMaskFunc(tmp_path / "rows.npy")
    (tmp_path / "bad.mat").write_bytes(b"MATLAB 5.0 MAT-file, not really")
    with pytest.raises(ValueError, match=r"^mask\.path: .*bad\.mat is not a readable \.mat file"):
        masks.FixedMaskFunc(tmp_path / "bad.mat")
    np.save(tmp_path / "release.npy", release_style_mask(columns))
    with pytest.raises(ValueError, match=r"release\.npy has 32 columns but the k-space has 24"):
        masks.FixedMaskFunc(tmp_path / "release.npy")((1, 10, 24, 2))
