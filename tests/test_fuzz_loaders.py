"""Property-based fuzzing of the data loaders: corrupted input never becomes a silent wrong sample.

Every case builds a small valid data set, corrupts it in one way drawn by hypothesis, then builds
the dataset AND reads every item. The only acceptable outcomes are a one-line
:class:`~cmfnet.runs.errors.DataError` naming the corrupted file, or (for corruptions that leave
the data readable and meaningful) samples whose tensors are all finite. Any other exception (a
bare h5py, nibabel, numpy or csv error) fails the test.

Examples are derandomised (the same cases every run, no example database written);
``CMFNET_FUZZ_EXAMPLES=200 pytest tests/test_fuzz_loaders.py`` explores more.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import HEADER_TEMPLATE, smooth_images, write_fastmri_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmfnet.data.fastmri import FastMRIPairDataset
from cmfnet.data.isles import ISLESPairDataset
from cmfnet.data.transforms import JointRecSRTransform, JointSample
from cmfnet.mri.masks import RandomMaskFunc
from cmfnet.runs.errors import DataError

FUZZ = settings(
    max_examples=int(os.environ.get("CMFNET_FUZZ_EXAMPLES", "25")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

HR_SIZE = 16
COLS = 20
FASTMRI_FILES = ("a0_pd.h5", "a0_pdfs.h5", "a1_pd.h5", "a1_pdfs.h5")
ISLES_SUBJECTS = ("1", "2")
ISLES_SHAPE = (20, 20, 6)
ISLES_SLICES = (1, 5)
ISLES_CROP = (16, 16)


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh temporary folder per hypothesis example (pytest's tmp_path is per test)."""
    with tempfile.TemporaryDirectory(prefix="cmfnet-fuzz-") as folder:
        yield Path(folder)


def transform() -> JointRecSRTransform:
    return JointRecSRTransform(RandomMaskFunc([0.08], [4], seed=0), seed_masks_by_name=True)


def read_everything(dataset) -> list[JointSample]:
    """Every item of a dataset (the fuzz tests read them all, not only the first)."""
    return [dataset[i] for i in range(len(dataset))]


def assert_sound(samples: Sequence[JointSample]) -> None:
    """Every tensor finite, and both normalised inputs non-constant: the fixtures' images never
    are, so a constant input means the normalisation statistics broke (e.g. an overflowing std
    that maps the whole image to 0, which is finite yet wrong)."""
    for sample in samples:
        where = f"{sample.fname} slice {sample.slice_idx}"
        for name, value in sample._asdict().items():
            if isinstance(value, torch.Tensor):
                assert torch.isfinite(value).all(), f"{where}: non-finite {name}"
        for name in ("target_input", "aux_input"):
            image = getattr(sample, name)
            assert image.max() > image.min(), f"{where}: constant {name}"


def outcome(load: Callable[[], list[JointSample]], culprit: str) -> str:
    """Run ``load``; return "error" for a clean DataError naming ``culprit``, "ok" for finite
    samples.

    Anything else (another exception type, a multi-line message, a message without the file
    name, a sample that is not :func:`assert_sound`) fails the calling test.
    """
    try:
        samples = load()
    except DataError as err:
        message = str(err)
        assert culprit in message, f"DataError does not name {culprit}: {message}"
        assert "\n" not in message, f"DataError is not one line: {message!r}"
        return "error"
    assert_sound(samples)
    return "ok"


# --------------------------------------------------------------------------------------------
# fastMRI (HDF5) pairs
# --------------------------------------------------------------------------------------------


def write_fastmri_set(root: Path, slices: int, seed: int = 0) -> Path:
    """Two valid PD/PD-FS pairs with ``slices`` slices each under ``root/data`` and
    ``root/pairs.csv``."""
    rng = np.random.default_rng(seed)
    folder = root / "data"
    folder.mkdir()
    for name in FASTMRI_FILES:
        write_fastmri_file(folder / name, smooth_images(rng, slices, HR_SIZE), cols=COLS)
    (root / "pairs.csv").write_text(
        "pd_file,pdfs_file,score\na0_pd.h5,a0_pdfs.h5,0.9\na1_pd.h5,a1_pdfs.h5,0.8\n"
    )
    return folder


def load_fastmri(root: Path, scale: int = 2) -> list[JointSample]:
    return read_everything(
        FastMRIPairDataset(root / "data", root / "pairs.csv", scale=scale, transform=transform())
    )


def replace_dataset(path: Path, key: str, data) -> None:
    """Overwrite one HDF5 dataset (any dtype/shape) of an existing file."""
    with h5py.File(path, "a") as hf:
        if key in hf:
            del hf[key]
        hf.create_dataset(key, data=data)


def read_dataset(path: Path, key: str) -> np.ndarray:
    with h5py.File(path, "r") as hf:
        return hf[key][()]


files = st.sampled_from(FASTMRI_FILES)
slice_counts = st.integers(1, 3)


def test_a_valid_set_loads_finite_samples(tmp_path):
    write_fastmri_set(tmp_path, slices=2)
    samples = load_fastmri(tmp_path)
    assert len(samples) == 4
    assert_sound(samples)


@pytest.mark.slow
@FUZZ
@given(name=files, slices=slice_counts, cut=st.floats(0.0, 0.999))
def test_truncated_hdf5_is_a_clear_error(name, slices, cut):
    with scratch() as root:
        path = write_fastmri_set(root, slices) / name
        raw = path.read_bytes()
        path.write_bytes(raw[: int(cut * len(raw))])
        assert outcome(lambda: load_fastmri(root), name) == "error"


@FUZZ
@given(name=files, garbage=st.binary(min_size=0, max_size=4096))
def test_garbage_bytes_instead_of_hdf5_are_a_clear_error(name, garbage):
    with scratch() as root:
        path = write_fastmri_set(root, 1) / name
        path.write_bytes(garbage)
        assert outcome(lambda: load_fastmri(root), name) == "error"


@FUZZ
@given(name=files, slices=slice_counts, seed=st.integers(0, 2**16), count=st.integers(1, 64))
def test_garbage_bytes_inside_hdf5_never_give_non_finite_samples(name, slices, seed, count):
    """Bytes overwritten at random offsets: HDF5 has no checksums on contiguous data, so a hit in
    the array bytes may go unnoticed (finite values are all a reader can check); a hit in the
    metadata or one that yields NaN/inf must be a clean error."""
    with scratch() as root:
        path = write_fastmri_set(root, slices) / name
        raw = bytearray(path.read_bytes())
        rng = np.random.default_rng(seed)
        for offset in rng.integers(0, len(raw), size=count):
            raw[offset] = int(rng.integers(0, 256))
        path.write_bytes(bytes(raw))
        outcome(lambda: load_fastmri(root), name)


real_dtypes = st.sampled_from([np.float32, np.float64, np.int16, np.int32, np.uint8])
bad_target_dtypes = st.sampled_from([np.int16, np.int32, np.uint8, np.complex64, np.bool_])


@FUZZ
@given(name=files, slices=slice_counts, dtype=real_dtypes)
def test_real_kspace_is_a_clear_error(name, slices, dtype):
    with scratch() as root:
        path = write_fastmri_set(root, slices) / name
        replace_dataset(path, "kspace", np.abs(read_dataset(path, "kspace")).astype(dtype))
        assert outcome(lambda: load_fastmri(root), name) == "error"


@FUZZ
@given(name=files, slices=slice_counts, dtype=bad_target_dtypes)
def test_non_float_target_is_a_clear_error(name, slices, dtype):
    with scratch() as root:
        path = write_fastmri_set(root, slices) / name
        replace_dataset(
            path,
            "reconstruction_esc",
            (read_dataset(path, "reconstruction_esc") * 100).astype(dtype),
        )
        assert outcome(lambda: load_fastmri(root), name) == "error"


def _reshape_kspace_2d(kspace: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return kspace[0]


def _reshape_kspace_4d(kspace: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return kspace[:, None]


def _drop_kspace_slices(kspace: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return kspace[: int(rng.integers(0, kspace.shape[0]))]


def _add_kspace_slices(kspace: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([kspace, kspace[: int(rng.integers(1, kspace.shape[0] + 1))]])


def _shrink_kspace_rows(kspace: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return kspace[:, : int(rng.integers(0, HR_SIZE)), :]


def _shrink_kspace_cols(kspace: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return kspace[:, :, : int(rng.integers(0, COLS))]


KSPACE_RESHAPES = {
    "2-D kspace": _reshape_kspace_2d,
    "4-D kspace": _reshape_kspace_4d,
    "fewer kspace slices than target": _drop_kspace_slices,
    "more kspace slices than target": _add_kspace_slices,
    "kspace rows below recon size": _shrink_kspace_rows,
    "kspace columns below header's acquired range": _shrink_kspace_cols,
}


@FUZZ
@given(
    name=files,
    slices=slice_counts,
    reshape=st.sampled_from(sorted(KSPACE_RESHAPES)),
    seed=st.integers(0, 99),
)
def test_wrong_kspace_shapes_are_a_clear_error(name, slices, reshape, seed):
    with scratch() as root:
        path = write_fastmri_set(root, slices) / name
        kspace = read_dataset(path, "kspace")
        replace_dataset(
            path, "kspace", KSPACE_RESHAPES[reshape](kspace, np.random.default_rng(seed))
        )
        assert outcome(lambda: load_fastmri(root), name) == "error"


@FUZZ
@given(
    name=files,
    slices=slice_counts,
    rows=st.integers(0, 24),
    cols=st.integers(0, 24),
    extra=st.integers(-1, 2),
)
def test_target_shape_disagreeing_with_header_or_kspace_is_a_clear_error(
    name, slices, rows, cols, extra
):
    """Target slices != kspace slices, or a target in-plane size other than the header's recon
    size."""
    if (rows, cols, extra) == (HR_SIZE, HR_SIZE, 0):
        rows += 1
    with scratch() as root:
        path = write_fastmri_set(root, slices) / name
        target = np.ones((max(0, slices + extra), rows, cols), np.float32)
        replace_dataset(path, "reconstruction_esc", target)
        assert outcome(lambda: load_fastmri(root), name) == "error"


@FUZZ
@given(
    name=files,
    slices=slice_counts,
    key=st.sampled_from(["kspace", "reconstruction_esc"]),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
    imaginary=st.booleans(),
    where=st.integers(0, 10**6),
)
def test_nan_or_inf_anywhere_is_a_clear_error(name, slices, key, value, imaginary, where):
    with scratch() as root:
        path = write_fastmri_set(root, slices) / name
        array = read_dataset(path, key)
        flat = array.reshape(-1)
        flat[where % flat.size] += (1j * value) if (imaginary and key == "kspace") else value
        replace_dataset(path, key, array)
        assert outcome(lambda: load_fastmri(root), name) == "error"


@FUZZ
@given(name=files, slices=slice_counts, exponent=st.integers(20, 38), where=st.integers(0, 10**6))
def test_huge_finite_kspace_values_never_give_non_finite_samples(name, slices, exponent, where):
    """Finite float32 k-space values that overflow the FFT or the normalisation statistics must
    not pass, neither as NaN nor as an input normalised to all zeros."""
    with scratch() as root:
        path = write_fastmri_set(root, slices) / name
        kspace = read_dataset(path, "kspace")
        kspace.reshape(-1)[where % kspace.size] = np.complex64(3.0 * 10.0**exponent)
        replace_dataset(path, "kspace", kspace)
        outcome(lambda: load_fastmri(root), name)


def test_one_blown_up_kspace_value_is_reported_instead_of_wiping_the_image(tmp_path):
    """3e20 at a high frequency: finite, no overflow, yet in float32 the auxiliary image becomes
    that value's stripe pattern, cropped away to an all-zero LR input (found by the test above)."""
    path = write_fastmri_set(tmp_path, slices=2) / "a1_pd.h5"
    kspace = read_dataset(path, "kspace")
    kspace[1, 0, 1] = 3e20
    replace_dataset(path, "kspace", kspace)
    with pytest.raises(
        DataError, match=r"a1_pd\.h5: slice 1 k-space value at \(0, 1\) outweighs the rest"
    ):
        load_fastmri(tmp_path)


@FUZZ
@given(name=files, which=st.sampled_from(["kspace", "reconstruction_esc", "both"]))
def test_empty_volume_is_a_clear_error(name, which):
    with scratch() as root:
        path = write_fastmri_set(root, 2) / name
        for key in ("kspace", "reconstruction_esc"):
            if which in (key, "both"):
                replace_dataset(path, key, read_dataset(path, key)[:0])
        assert outcome(lambda: load_fastmri(root), name) == "error"


HEADER_FIELDS = (
    "encoding/encodedSpace/matrixSize/x",
    "encoding/encodedSpace/matrixSize/y",
    "encoding/reconSpace/matrixSize/x",
    "encoding/reconSpace/matrixSize/y",
    "encoding/encodingLimits/kspace_encoding_step_1/center",
    "encoding/encodingLimits/kspace_encoding_step_1/maximum",
)


def header_without(field: str, replacement: str | None) -> bytes:
    """The fixture's header with one field removed (``replacement`` None) or its text replaced."""
    xml = HEADER_TEMPLATE.format(
        enc_x=2 * HR_SIZE, enc_y=COLS, rec=HR_SIZE, maximum=COLS - 1, center=COLS // 2
    )
    ns = "{http://www.ismrm.org/ISMRMRD}"
    root = ET.fromstring(xml)
    *parents, leaf = field.split("/")
    parent = root.find("/".join(ns + tag for tag in parents))
    node = parent.find(ns + leaf)
    if replacement is None:
        parent.remove(node)
    else:
        node.text = replacement
    return ET.tostring(root)


@FUZZ
@given(
    name=files,
    field=st.sampled_from(HEADER_FIELDS),
    replacement=st.one_of(st.none(), st.sampled_from(["", "abc", "1.5", "1e3", " "])),
)
def test_missing_or_non_integer_header_fields_are_a_clear_error(name, field, replacement):
    with scratch() as root:
        path = write_fastmri_set(root, 1) / name
        replace_dataset(path, "ismrmrd_header", header_without(field, replacement))
        assert outcome(lambda: load_fastmri(root), name) == "error"


@FUZZ
@given(name=files, field=st.sampled_from(HEADER_FIELDS), value=st.integers(-(2**40), 2**40))
def test_any_integer_header_value_is_an_error_or_finite_samples(name, field, value):
    """Header numbers out of every sane range (negative, zero, huge) never crash the loader."""
    with scratch() as root:
        path = write_fastmri_set(root, 1) / name
        replace_dataset(path, "ismrmrd_header", header_without(field, str(value)))
        outcome(lambda: load_fastmri(root), name)


HEADER_PAYLOADS = {
    "not XML": b"<ismrmrdHeader><encoding>",
    "empty": b"",
    "integer": 7,
    "float array": np.arange(4, dtype=np.float32),
    "array of strings": np.array([b"<a/>", b"<b/>"]),
    "binary garbage": bytes(range(1, 256)),
    "opaque bytes": np.void(bytes(range(256))),
}


@FUZZ
@given(name=files, payload=st.sampled_from(sorted(HEADER_PAYLOADS)))
def test_malformed_header_dataset_is_a_clear_error(name, payload):
    with scratch() as root:
        path = write_fastmri_set(root, 1) / name
        replace_dataset(path, "ismrmrd_header", HEADER_PAYLOADS[payload])
        assert outcome(lambda: load_fastmri(root), name) == "error"


@FUZZ
@given(
    name=files,
    key=st.sampled_from(["kspace", "reconstruction_esc", "ismrmrd_header"]),
    as_group=st.booleans(),
)
def test_missing_dataset_or_a_group_in_its_place_is_a_clear_error(name, key, as_group):
    with scratch() as root:
        path = write_fastmri_set(root, 1) / name
        with h5py.File(path, "a") as hf:
            del hf[key]
            if as_group:
                hf.create_group(key).create_dataset("x", data=np.zeros(3))
        assert outcome(lambda: load_fastmri(root), name) == "error"


# --------------------------------------------------------------------------------------------
# Pairing CSVs
# --------------------------------------------------------------------------------------------

# Names with and without .h5 (the published CSVs leave it out): "a0_pdfs" and "a0_pdfs.h5" are
# one file.
csv_names = st.sampled_from(
    [
        "a0_pd.h5",
        "a0_pdfs.h5",
        "a1_pd.h5",
        "a1_pdfs.h5",
        "missing.h5",
        "",
        "a0_pdfs",
        "a1_pd",
        "missing",
    ]
)


@FUZZ
@given(
    rows=st.lists(st.tuples(csv_names, csv_names), min_size=0, max_size=5),
    header=st.booleans(),
    bom=st.booleans(),
)
def test_csv_pair_lists_are_valid_or_a_clear_error(rows, header, bom):
    """Any list of rows (duplicates, missing files, empty cells, self-pairs, no rows) either
    loads pairs of existing distinct files with each target once, or fails naming a file."""
    with scratch() as root:
        write_fastmri_set(root, 1)
        lines = (["pd_file,pdfs_file,score"] if header else []) + [
            f"{aux},{target},1" for aux, target in rows
        ]
        (root / "pairs.csv").write_text(
            ("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8"
        )
        try:
            dataset = FastMRIPairDataset(
                root / "data", root / "pairs.csv", scale=2, transform=transform()
            )
            samples = read_everything(dataset)
        except DataError as err:
            assert "pairs.csv" in str(err) or any(
                n and n in str(err) for pair in rows for n in pair
            ), str(err)
            assert "\n" not in str(err)
            return
        assert_sound(samples)
        used = [(aux.path.name, target.path.name) for aux, target in dataset.pairs]
        targets = [target for _, target in used]
        assert len(targets) == len(set(targets)), "a target file is used twice"
        assert all(aux != target for aux, target in used), "a file is paired with itself"
        assert "missing.h5" not in {n for pair in used for n in pair}


@FUZZ
@given(garbage=st.binary(min_size=1, max_size=512))
def test_csv_with_garbage_bytes_is_a_clear_error_or_valid(garbage):
    with scratch() as root:
        write_fastmri_set(root, 1)
        (root / "pairs.csv").write_bytes(garbage)
        assert outcome(lambda: load_fastmri(root), "pairs.csv") in ("error", "ok")


# --------------------------------------------------------------------------------------------
# ISLES (NIfTI) subjects
# --------------------------------------------------------------------------------------------


def isles_file(root: Path, subject: str, modality: str, suffix: str = ".nii") -> Path:
    return root / "isles" / subject / f"VSD.Brain.XX.O.{modality}.{subject}00{suffix}"


def write_isles_set(
    root: Path, gz: bool = False, dtype=np.float32, seed: int = 0
) -> dict[str, Path]:
    """Two valid subjects (T1, T2) of shape :data:`ISLES_SHAPE`; returns
    ``{"<subject>/<modality>": path}``."""
    rng = np.random.default_rng(seed)
    paths = {}
    for subject in ISLES_SUBJECTS:
        for modality in ("MR_T1", "MR_T2"):
            path = isles_file(root, subject, modality, ".nii.gz" if gz else ".nii")
            path.parent.mkdir(parents=True, exist_ok=True)
            volume = (rng.random(ISLES_SHAPE) * 1000).astype(dtype)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
            paths[f"{subject}/{modality}"] = path
    return paths


def load_isles(root: Path) -> list[JointSample]:
    dataset = ISLESPairDataset(
        root / "isles",
        subjects=None,
        scale=2,
        transform=transform(),
        hr_size=ISLES_CROP,
        slice_range=ISLES_SLICES,
    )
    return read_everything(dataset)


volumes = st.sampled_from([f"{s}/{m}" for s in ISLES_SUBJECTS for m in ("MR_T1", "MR_T2")])


def test_a_valid_isles_set_loads_finite_samples(tmp_path):
    write_isles_set(tmp_path)
    samples = load_isles(tmp_path)
    assert len(samples) == 2 * (ISLES_SLICES[1] - ISLES_SLICES[0])
    assert_sound(samples)


@FUZZ
@given(volume=volumes, gz=st.booleans(), cut=st.floats(0.0, 0.999))
def test_truncated_nifti_is_a_clear_error(volume, gz, cut):
    with scratch() as root:
        path = write_isles_set(root, gz=gz)[volume]
        raw = path.read_bytes()
        path.write_bytes(raw[: int(cut * len(raw))])
        assert outcome(lambda: load_isles(root), path.name) == "error"


@FUZZ
@given(volume=volumes, garbage=st.binary(min_size=0, max_size=2048), gz=st.booleans())
def test_garbage_bytes_instead_of_nifti_are_a_clear_error(volume, garbage, gz):
    with scratch() as root:
        path = write_isles_set(root, gz=gz)[volume]
        path.write_bytes(gzip.compress(garbage) if gz else garbage)
        assert outcome(lambda: load_isles(root), path.name) == "error"


@FUZZ
@given(volume=volumes, seed=st.integers(0, 2**16), count=st.integers(1, 32), gz=st.booleans())
def test_garbage_bytes_inside_nifti_never_give_non_finite_samples(volume, seed, count, gz):
    """Bytes overwritten at random offsets of a .nii or a .nii.gz (whose CRC the loader checks)."""
    with scratch() as root:
        path = write_isles_set(root, gz=gz)[volume]
        raw = bytearray(path.read_bytes())
        rng = np.random.default_rng(seed)
        for offset in rng.integers(0, len(raw), size=count):
            raw[offset] = int(rng.integers(0, 256))
        path.write_bytes(bytes(raw))
        outcome(lambda: load_isles(root), path.name)


@FUZZ
@given(dtype=st.sampled_from([np.int16, np.uint8, np.int32, np.float64]), gz=st.booleans())
def test_integer_and_double_nifti_volumes_load_finite(dtype, gz):
    """ISLES volumes are often int16: integer data is valid NIfTI and must load."""
    with scratch() as root:
        write_isles_set(root, gz=gz, dtype=dtype)
        assert outcome(lambda: load_isles(root), "") == "ok"


def _complex_volume(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return (rng.random(shape) + 1j * rng.random(shape)).astype(np.complex64)


def _rgb_volume(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    rgb = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
    return rng.integers(0, 255, size=shape + (3,), dtype=np.uint8).view(rgb).reshape(shape)


BAD_NIFTI_VOLUMES = {
    "2-D": lambda rng: rng.random(ISLES_SHAPE[:2]).astype(np.float32),
    "4-D with two volumes": lambda rng: rng.random(ISLES_SHAPE + (2,)).astype(np.float32),
    "no slices": lambda rng: np.zeros(ISLES_SHAPE[:2] + (0,), np.float32),
    "in-plane smaller than the crop": lambda rng: rng.random((12, 20, ISLES_SHAPE[2])).astype(
        np.float32
    ),
    "differs from its pair": lambda rng: rng.random((22, 20, ISLES_SHAPE[2])).astype(np.float32),
    "complex": lambda rng: _complex_volume(ISLES_SHAPE, rng),
    "RGB": lambda rng: _rgb_volume(ISLES_SHAPE, rng),
}


@FUZZ
@given(volume=volumes, kind=st.sampled_from(sorted(BAD_NIFTI_VOLUMES)), seed=st.integers(0, 99))
def test_wrong_nifti_shapes_and_dtypes_are_a_clear_error(volume, kind, seed):
    with scratch() as root:
        path = write_isles_set(root)[volume]
        nib.save(
            nib.Nifti1Image(BAD_NIFTI_VOLUMES[kind](np.random.default_rng(seed)), np.eye(4)), path
        )
        assert outcome(lambda: load_isles(root), path.name) == "error"


@FUZZ
@given(volume=volumes, gz=st.booleans())
def test_4d_nifti_with_one_volume_loads_like_3d(volume, gz):
    with scratch() as root:
        paths = write_isles_set(root, gz=gz)
        reference = load_isles(root)
        path = paths[volume]
        data = np.asarray(nib.load(str(path), mmap=False).dataobj)
        nib.save(nib.Nifti1Image(data[..., None], np.eye(4)), path)
        samples = load_isles(root)
        assert len(samples) == len(reference)
        for got, want in zip(samples, reference):
            assert torch.equal(got.sr_target, want.sr_target) and torch.equal(
                got.aux_input, want.aux_input
            )


@FUZZ
@given(
    volume=volumes,
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
    z=st.integers(ISLES_SLICES[0], ISLES_SLICES[1] - 1),
    y=st.integers(2, 17),
    x=st.integers(2, 17),
    gz=st.booleans(),
)
def test_nan_or_inf_in_a_used_nifti_slice_is_a_clear_error(volume, value, z, y, x, gz):
    with scratch() as root:
        path = write_isles_set(root, gz=gz)[volume]
        data = np.asarray(nib.load(str(path), mmap=False).dataobj).copy()
        data[y, x, z] = value
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        assert outcome(lambda: load_isles(root), path.name) == "error"


def set_scaling(path: Path, slope: float, inter: float) -> None:
    """Write scl_slope/scl_inter (bytes 112-119 of a NIfTI-1 header) as stored, unchecked."""
    raw = bytearray(path.read_bytes())
    raw[112:120] = struct.pack("<ff", slope, inter)
    path.write_bytes(bytes(raw))


@FUZZ
@given(
    volume=volumes,
    exponent=st.integers(6, 38),
    z=st.integers(0, ISLES_SHAPE[2] - 1),
    y=st.integers(0, ISLES_SHAPE[0] - 1),
    x=st.integers(0, ISLES_SHAPE[1] - 1),
)
def test_huge_finite_voxels_never_give_unsound_samples(volume, exponent, z, y, x):
    """One voxel blown up to 3e6..3e38 (what a flipped exponent bit does): a clean error, or
    samples that are finite with inputs that still carry the image."""
    with scratch() as root:
        path = write_isles_set(root)[volume]
        data = np.asarray(nib.load(str(path), mmap=False).dataobj).copy()
        data[y, x, z] = 3.0 * 10.0**exponent
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        outcome(lambda: load_isles(root), path.name)


def test_one_blown_up_voxel_is_reported(tmp_path):
    path = write_isles_set(tmp_path)["2/MR_T1"]
    data = np.asarray(nib.load(str(path), mmap=False).dataobj).copy()
    data[3, 4, 2] = 3e20
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(DataError, match=rf"{path.name}: slice 2 voxel \(3, 4\) outweighs the rest"):
        load_isles(tmp_path)


@FUZZ
@given(
    volume=volumes,
    slope=st.sampled_from([np.inf, -np.inf, 1e38, -3e37, 2.0]),
    inter=st.sampled_from([0.0, np.nan, np.inf, 1e38]),
    dtype=st.sampled_from([np.int16, np.float32]),
)
def test_header_scaling_that_overflows_or_is_not_finite_is_a_clear_error(
    volume, slope, inter, dtype
):
    """scl_slope/scl_inter in the NIfTI header scale the stored values: an infinite slope, a
    NaN/inf intercept or scaling that overflows float32 must not pass."""
    if (slope, inter) == (2.0, 0.0):
        inter = np.nan
    with scratch() as root:
        path = write_isles_set(root, dtype=dtype)[volume]
        set_scaling(path, slope, inter)
        assert outcome(lambda: load_isles(root), path.name) == "error"


@FUZZ
@given(
    subject=st.sampled_from(ISLES_SUBJECTS),
    modality=st.sampled_from(["MR_T1", "MR_T2"]),
    duplicate=st.booleans(),
)
def test_missing_or_ambiguous_modality_file_is_a_clear_error(subject, modality, duplicate):
    with scratch() as root:
        path = write_isles_set(root)[f"{subject}/{modality}"]
        if duplicate:
            (path.parent / f"copy_{path.name}").write_bytes(path.read_bytes())
        else:
            path.unlink()
        assert outcome(lambda: load_isles(root), str(path.parent)) == "error"


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_nifti_is_caught_when_the_dataset_is_built_not_mid_training(tmp_path, gz):
    """Even when the cut only removes slices outside ``slice_range`` (which are never read)."""
    path = write_isles_set(tmp_path, gz=gz)["2/MR_T2"]
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 40])
    with pytest.raises(DataError, match=rf"{path.name}: truncated"):
        ISLESPairDataset(
            tmp_path / "isles",
            subjects=None,
            scale=2,
            transform=transform(),
            hr_size=ISLES_CROP,
            slice_range=ISLES_SLICES,
        )
