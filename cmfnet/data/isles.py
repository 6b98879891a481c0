"""ISLES 2015 SISS pairs (T1 auxiliary, T2 target) from NIfTI volumes.

Each subject folder holds one NIfTI file per modality, found (at any depth) by a glob pattern
on its name. The challenge's layout, read as distributed: subject folders ``1`` ... ``28``, each
with ``VSD.Brain.XX.O.MR_T1.<id>/VSD.Brain.XX.O.MR_T1.<id>.nii`` and the same for ``MR_T2``,
``MR_Flair``, ``MR_DWI`` and ``VSD.Brain_3more.XX.O.OT.<id>``; the patterns ``*.MR_T1.*`` and
``*.MR_T2.*`` match the T1 and T2 files only (not their folders, not ``MR_T1c``, not hidden
``._*`` copies that archivers leave). Volumes are co-registered, about
230 x 230 in plane; axial slices (last axis) in ``slice_range`` are centre-cropped to
``hr_size`` (the CMF-Net protocol: 224 x 224, slices 20-119). Magnitude images have no raw
k-space, so the HR k-space is the FFT of the real image.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import nibabel as nib
import numpy as np

from cmfnet.data.paired import PairedSliceDataset, checked_hr_size, dominant_value
from cmfnet.mri.degrade import LowResPair, degrade_magnitude_slice
from cmfnet.mri.kspace import center_crop
from cmfnet.runs.errors import DataError, one_line


@dataclass(frozen=True)
class NiftiVolume:
    """One modality of one subject: its file and in-plane/slice sizes from the header."""

    path: Path
    shape: tuple[int, int, int]


def find_modality(subject_dir: Path, pattern: str) -> Path:
    """The single NIfTI file (``.nii`` or ``.nii.gz``) at any depth under ``subject_dir`` whose name
    matches ``pattern``; folders and hidden files (``.*``, e.g. macOS ``._`` copies) never match."""
    matches = sorted(
        p
        for p in subject_dir.rglob(pattern)
        if p.is_file() and not p.name.startswith(".") and p.name.endswith((".nii", ".nii.gz"))
    )
    if len(matches) != 1:
        listed = (
            ": " + ", ".join(str(p.relative_to(subject_dir)) for p in matches) if matches else ""
        )
        raise DataError(
            f"{subject_dir}: expected one NIfTI file matching '{pattern}', "
            f"found {len(matches)}{listed}"
        )
    return matches[0]


def _load(path: Path) -> nib.Nifti1Image:
    """Open a NIfTI file (header only; no memory map, so a file replaced on disk cannot crash
    us)."""
    try:
        return nib.load(str(path), mmap=False)
    except Exception as err:  # nibabel raises several unrelated types for broken files
        raise DataError(f"{path}: not a readable NIfTI file ({one_line(err)})") from err


def read_nifti_info(path: Path) -> NiftiVolume:
    """Header read of a 3-D real-valued NIfTI volume, checked complete: a file shorter than its
    header says is reported here, before any training step (a .nii.gz is decompressed once to
    its end for this, which also checks its CRC)."""
    image = _load(path)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3 or min(shape) == 0:
        raise DataError(f"{path}: expected a 3-D volume, header says shape {image.shape}")
    dtype = image.get_data_dtype()
    if dtype.kind not in "iuf":
        raise DataError(f"{path}: expected real-valued voxels, header says {dtype}")
    slope = _stored_slope(path, image)
    if np.isinf(slope):
        raise DataError(f"{path}: header's scl_slope is {slope}")
    needed = int(image.dataobj.offset) + int(np.prod(shape)) * dtype.itemsize
    size = _gzip_length(path) if path.name.endswith(".gz") else path.stat().st_size
    if size < needed:
        raise DataError(
            f"{path}: truncated, {size} bytes (uncompressed) but the header needs {needed}"
        )
    return NiftiVolume(path=path, shape=shape)  # type: ignore[arg-type]


def _stored_slope(path: Path, image: nib.Nifti1Image) -> float:
    """The header's scl_slope as stored (nibabel silently drops an infinite one and reads the
    voxels unscaled; we report it instead). NaN and 0 mean "no scaling" in NIfTI."""
    with nib.openers.ImageOpener(str(path)) as handle:
        return float(type(image.header).from_fileobj(handle)["scl_slope"])


def _gzip_length(path: Path, chunk_bytes: int = 1 << 22) -> int:
    """Uncompressed length of a .gz file, read to its end so that its CRC is checked too."""
    total = 0
    try:
        with gzip.open(path, "rb") as handle:
            while chunk := handle.read(chunk_bytes):
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: truncated or corrupted gzip stream ({one_line(err)})") from err
    return total


def read_nifti_slice(volume: NiftiVolume, slice_idx: int, hr_size: tuple[int, int]) -> np.ndarray:
    """Axial slice ``slice_idx`` centre-cropped to ``hr_size``: (H, W) float32, checked finite
    after the header's intensity scaling."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            data = np.asarray(_load(volume.path).dataobj[:, :, slice_idx], dtype=np.float32)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{volume.path}: cannot read slice {slice_idx} ({one_line(err)})") from err
    data = data.reshape(volume.shape[:2])
    if not np.isfinite(data).all():
        raise DataError(
            f"{volume.path}: slice {slice_idx} contains NaN or inf (after the header's scaling)"
        )
    spike = dominant_value(data)
    if spike is not None:
        raise DataError(
            f"{volume.path}: slice {slice_idx} voxel {spike} outweighs the rest of the slice "
            "beyond float32 precision (a corrupted value?)"
        )
    return np.ascontiguousarray(center_crop(data, hr_size))


class ISLESPairDataset(PairedSliceDataset):
    """Slices of T1/T2 subject pairs: item i -> transform(LowResPair, T2 file name, slice index).

    Args:
        root: folder of subject folders.
        subjects: subject folder names to use (a split); ``None`` uses every folder in ``root``.
        scale: super-resolution factor; must divide ``hr_size``.
        transform: callable ``(LowResPair, fname, slice_idx) -> sample``.
        hr_size: in-plane centre crop (H, W); must fit inside the volumes.
        slice_range: [first, last) axial slices, clipped to the volume.
        aux_pattern, target_pattern: glob patterns of the auxiliary and target files.
        cache_lowres: keep each slice's deterministic degradation in memory after first use.
    """

    def __init__(
        self,
        root: str | Path,
        subjects: Optional[Sequence[str]],
        scale: int,
        transform: Callable,
        hr_size: Sequence[int] = (224, 224),
        slice_range: Sequence[int] = (20, 120),
        aux_pattern: str = "*.MR_T1.*",
        target_pattern: str = "*.MR_T2.*",
        cache_lowres: bool = True,
    ):
        super().__init__(root, transform, cache_lowres)
        self.hr_size = checked_hr_size(hr_size, scale)
        self.scale = scale
        names = (
            sorted(p.name for p in self.root.iterdir() if p.is_dir())
            if subjects is None
            else list(subjects)
        )
        if not names:
            raise DataError(f"{self.root}: no subject folders")
        self.pairs: list[tuple[NiftiVolume, NiftiVolume]] = []
        for name in names:
            subject_dir = self.root / name
            if not subject_dir.is_dir():
                raise DataError(f"{subject_dir}: subject folder not found")
            aux = read_nifti_info(find_modality(subject_dir, aux_pattern))
            target = read_nifti_info(find_modality(subject_dir, target_pattern))
            if aux.shape != target.shape:
                raise DataError(
                    f"{target.path}: shape {target.shape} "
                    f"differs from its pair {aux.path.name} {aux.shape}"
                )
            if self.hr_size[0] > target.shape[0] or self.hr_size[1] > target.shape[1]:
                raise DataError(
                    f"{target.path}: data.hr_size {self.hr_size} "
                    f"exceeds the in-plane size {target.shape[:2]}"
                )
            first, last = max(0, slice_range[0]), min(target.shape[2], slice_range[1])
            if first >= last:
                raise DataError(
                    f"{target.path}: data.slice_range {tuple(slice_range)} "
                    f"selects no slice of {target.shape[2]}"
                )
            pair_idx = len(self.pairs)
            self.pairs.append((aux, target))
            self.slices += [(pair_idx, s) for s in range(first, last)]

    def degradation_settings(self) -> dict:
        return {"scale": int(self.scale), "hr_size": list(self.hr_size)}

    def build_lowres(self, pair_idx: int, slice_idx: int) -> LowResPair:
        aux, target = self.pairs[pair_idx]
        target_hr = read_nifti_slice(target, slice_idx, self.hr_size)
        aux_hr = read_nifti_slice(aux, slice_idx, self.hr_size)
        return degrade_magnitude_slice(target_hr, aux_hr, self.scale)

    def pair_paths(self, pair_idx: int) -> tuple[Path, Path]:
        aux, target = self.pairs[pair_idx]
        return aux.path, target.path
