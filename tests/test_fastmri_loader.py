import h5py
import numpy as np
import pytest
import torch
from conftest import smooth_images, write_fastmri_file

from cmfnet.data.fastmri import FastMRIPairDataset, parse_ismrmrd_header
from cmfnet.data.pairs_csv import read_pairs_csv
from cmfnet.data.transforms import JointRecSRTransform, JointSample
from cmfnet.mri.masks import RandomMaskFunc
from cmfnet.runs.errors import DataError


def _dataset(root, scale=2, csv="pairs.csv", seeded=True, **kwargs):
    transform = JointRecSRTransform(RandomMaskFunc([0.08], [4], seed=0), seed_masks_by_name=seeded)
    return FastMRIPairDataset(
        root / "singlecoil_val", root / csv, scale=scale, transform=transform, **kwargs
    )


def test_pairs_slice_i_with_slice_i_over_the_smaller_count(fastmri_pairs):
    data = _dataset(fastmri_pairs)
    # pair 0: 3 and 3 slices; pair 1: 4 and 5 slices -> 3 + 4
    assert len(data) == 7
    sample = data[4]
    assert isinstance(sample, JointSample)
    assert sample.fname == "file1_pdfs.h5" and sample.slice_idx == 1
    assert (
        sample.target_input.shape == sample.aux_input.shape == sample.rec_target.shape == (1, 8, 8)
    )
    assert sample.sr_target.shape == (1, 16, 16)
    with h5py.File(fastmri_pairs / "singlecoil_val" / "file1_pdfs.h5") as hf:
        esc = hf["reconstruction_esc"][1]
    np.testing.assert_allclose(
        (sample.sr_target[0] * sample.std + sample.mean).numpy(), esc, rtol=1e-4, atol=1e-6
    )


def test_header_gives_recon_size_and_padding(fastmri_pairs):
    with h5py.File(fastmri_pairs / "singlecoil_val" / "file0_pd.h5") as hf:
        header = parse_ismrmrd_header(hf["ismrmrd_header"][()], "file0_pd.h5")
    assert header["recon_size"] == (16, 16)
    assert header["encoded_size"] == (32, 20)
    assert (header["padding_left"], header["padding_right"]) == (0, 20)
    data = _dataset(fastmri_pairs)
    assert data.pairs[0][1].recon_size == (16, 16)


def test_validation_masks_are_identical_across_datasets_and_cache_is_used(fastmri_pairs):
    a, b = _dataset(fastmri_pairs), _dataset(fastmri_pairs, cache_lowres=False)
    assert torch.equal(a[2].mask, b[2].mask)
    assert torch.equal(a[2].target_input, b[2].target_input)
    assert len(a._cache) == 1 and len(b._cache) == 0


def test_csv_reader_accepts_minet_rows_and_rejects_bad_ones(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("pd_file,pdfs_file,score\na.h5,b.h5,0.5\nc.h5,d.h5\n")
    assert read_pairs_csv(path) == [("a.h5", "b.h5"), ("c.h5", "d.h5")]
    path.write_text("a.h5\n")
    with pytest.raises(DataError, match="line 1 needs"):
        read_pairs_csv(path)
    path.write_text("a.h5,b.h5\nc.h5,b.h5\n")
    with pytest.raises(DataError, match="listed in more than one pair"):
        read_pairs_csv(path)
    path.write_text("pdfs_file,pd_file,score\nb.h5,a.h5,1\n")  # a header says which column is which
    assert read_pairs_csv(path) == [("a.h5", "b.h5")]
    path.write_text("pd_file,second\na.h5,b.h5\n")  # a header that does not name both is refused
    with pytest.raises(
        DataError, match=r"p\.csv: line 1 is a header but does not name both the 'pd_file'"
    ):
        read_pairs_csv(path)
    path.write_text(
        "a.h5,b.h5\n.,d.h5\n"
    )  # not a file name: the CSV and line are named, not a folder
    with pytest.raises(
        DataError,
        match=r"p\.csv: line 2 needs 'pd_file,pdfs_file\[,score\]' \(names with or "
        r"without \.h5\), got \['\.', 'd\.h5'\]",
    ):
        read_pairs_csv(path)


def test_csv_row_naming_a_missing_file(fastmri_pairs):
    (fastmri_pairs / "bad.csv").write_text("file0_pd.h5,missing.h5\n")
    with pytest.raises(DataError, match=r"missing\.h5: file not found"):
        _dataset(fastmri_pairs, csv="bad.csv")


def test_truncated_and_non_hdf5_files(fastmri_pairs):
    folder = fastmri_pairs / "singlecoil_val"
    raw = (folder / "file0_pdfs.h5").read_bytes()
    (folder / "file0_pdfs.h5").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match=r"file0_pdfs\.h5: not a readable HDF5 file"):
        _dataset(fastmri_pairs)
    (folder / "file0_pdfs.h5").write_text("hello")
    with pytest.raises(DataError, match=r"file0_pdfs\.h5: not a readable HDF5 file"):
        _dataset(fastmri_pairs)


@pytest.mark.parametrize("key", ["kspace", "reconstruction_esc", "ismrmrd_header"])
def test_missing_keys(fastmri_pairs, key):
    with h5py.File(fastmri_pairs / "singlecoil_val" / "file1_pd.h5", "a") as hf:
        del hf[key]
    with pytest.raises(DataError, match=rf"file1_pd\.h5: missing dataset '{key}'"):
        _dataset(fastmri_pairs)


def test_pairs_whose_shapes_disagree(fastmri_pairs):
    folder = fastmri_pairs / "singlecoil_val"
    write_fastmri_file(
        folder / "file1_pd.h5", smooth_images(np.random.default_rng(5), 4, 12), cols=20
    )
    with pytest.raises(
        DataError,
        match=(
            r"file1_pdfs\.h5: recon size \(16, 16\) "
            r"differs from its pair file1_pd\.h5 \(12, 12\)"
        ),
    ):
        _dataset(fastmri_pairs)


def test_nan_kspace_is_reported_with_file_and_slice(fastmri_pairs):
    with h5py.File(fastmri_pairs / "singlecoil_val" / "file0_pdfs.h5", "a") as hf:
        kspace = hf["kspace"][()]
        kspace[1, 3, 4] = np.nan
        hf["kspace"][...] = kspace
    data = _dataset(fastmri_pairs)
    data[0]
    with pytest.raises(DataError, match=r"file0_pdfs\.h5: slice 1 k-space contains NaN or inf"):
        data[1]


def test_scale_that_does_not_divide_the_image(fastmri_pairs):
    with pytest.raises(
        DataError, match=r"file0_pdfs\.h5: scale=3 does not divide the HR size 16x16"
    ):
        _dataset(fastmri_pairs, scale=3)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        _dataset(tmp_path)


def test_reads_files_written_by_fastmri_conventions_for_odd_widths(tmp_path):
    folder = tmp_path / "singlecoil_val"
    folder.mkdir()
    rng = np.random.default_rng(7)
    write_fastmri_file(folder / "a.h5", smooth_images(rng, 2, 16), cols=23)
    write_fastmri_file(folder / "b.h5", smooth_images(rng, 2, 16), cols=23)
    (tmp_path / "pairs.csv").write_text("a.h5,b.h5,1\n")
    sample = _dataset(tmp_path, scale=2)[1]  # 8 LR columns: the 0.08 centre keeps one
    assert sample.sr_target.shape == (1, 16, 16) and torch.isfinite(sample.target_input).all()


KNEE = {"aux": "CORPD_FBK", "target": "CORPDFS_FBK"}


def test_a_csv_with_swapped_columns_is_refused_naming_the_row(fastmri_pairs):
    rows = (fastmri_pairs / "pairs.csv").read_text().splitlines()
    swapped = [",".join([r.split(",")[1], r.split(",")[0], r.split(",")[2]]) for r in rows]
    (fastmri_pairs / "swapped.csv").write_text("\n".join(swapped) + "\n")
    assert len(_dataset(fastmri_pairs, contrasts=KNEE)) == 7  # the published order passes
    with pytest.raises(DataError) as info:
        _dataset(fastmri_pairs, csv="swapped.csv", contrasts=KNEE)
    message = str(info.value)
    assert message.startswith(f"{fastmri_pairs / 'swapped.csv'}: the row file0_pdfs.h5,file0_pd.h5")
    assert "pairs auxiliary CORPDFS_FBK with target CORPD_FBK" in message
    assert "expects auxiliary CORPD_FBK and target CORPDFS_FBK; the CSV's columns look swapped" in (
        message
    )
    reversed_on_purpose = {"aux": "CORPDFS_FBK", "target": "CORPD_FBK"}
    assert len(_dataset(fastmri_pairs, csv="swapped.csv", contrasts=reversed_on_purpose)) == 7
    assert len(_dataset(fastmri_pairs, csv="swapped.csv", contrasts=None)) == 7


def test_files_without_an_acquisition_are_accepted_with_one_warning(fastmri_pairs, caplog):
    folder = fastmri_pairs / "singlecoil_val"
    for name in ("file0_pd.h5", "file1_pdfs.h5"):
        with h5py.File(folder / name, "r+") as hf:
            del hf.attrs["acquisition"]
    with caplog.at_level("WARNING", logger="cmfnet.data.fastmri"):
        assert len(_dataset(fastmri_pairs, contrasts=KNEE)) == 7
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("2 file(s) listed in")
    with h5py.File(folder / "file1_pd.h5", "r+") as hf:
        hf.attrs["acquisition"] = "AXT2_FLAIR"
    with pytest.raises(DataError, match="pairs auxiliary AXT2_FLAIR with target"):
        _dataset(fastmri_pairs, contrasts=KNEE)


@pytest.mark.parametrize("contrasts", [{"aux": "CORPD_FBK"}, ["CORPD_FBK", "CORPDFS_FBK"]])
def test_a_malformed_contrast_setting_is_refused(fastmri_pairs, contrasts):
    with pytest.raises(ValueError, match=r"^contrasts must be \{aux: <acquisition>"):
        _dataset(fastmri_pairs, contrasts=contrasts)
