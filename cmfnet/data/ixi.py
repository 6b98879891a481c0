"""IXI pairs (auxiliary T1 or PD, target T2 or PD) from the NIfTI files as distributed.

Layout: one ``IXI<id>-<site>-<num>-<contrast>.nii.gz`` file per subject and contrast (e.g.
``IXI002-Guys-0828-T2.nii.gz``), found at any depth under the root, so the unpacked archives
(``IXI-T1/``, ``IXI-T2/``, ``IXI-PD/``) and a single folder holding them all both work. Files
of other names (DTI's ``...-DTI-00.nii.gz``, hidden ``._*`` copies) are ignored.

Pairing and split: the subjects are those with a target file. They are ordered by the
SHA-256 of ``"<split_seed>:<id>"`` (deterministic on every machine and numpy version) and cut
by ``fractions`` (train, val, test) into the first ``round(f_train * n)``, the next
``round((f_train + f_val) * n) - round(f_train * n)`` and the rest, so each subject lies in one
set and the sets do not depend on the auxiliary contrast chosen. Subjects of a split without an
auxiliary file are left out (one log line says how many). A split may instead list its
``subjects`` (ids such as ``IXI002``); a listed subject must have both files.

Resampling (no registration): IXI's T2 and PD come from one dual-echo acquisition and share a
grid, but T1 is a separate (sagittal) acquisition on its own grid. The auxiliary volume is
resampled onto the target's voxel grid through the two NIfTI affines (nibabel's ``affine``,
voxel -> scanner mm): target voxel ``v`` reads the auxiliary volume at ``inv(A_aux) @ A_target
@ v`` by trilinear interpolation (``scipy.ndimage.map_coordinates``, order 1), zero outside
its field of view. Identical grids are copied without interpolation. The affines must be
finite and invertible, and the auxiliary field of view must cover at least ``min_overlap`` of
the target's selected slices (judged on a voxel grid of at most 32 x 32 per slice), else the
pair is refused: the files then do not describe the same head position.

Slices and orientation, following T2Net's released IXI loader (chunmeifeng/T2Net,
``fastmri/mri_ixi_t2net.py`` and ``ixi_config.yaml``): slices of the target's third voxel
axis (IXI's T2 is axial there), ``slice_range`` [20, 120), 256 x 256 in plane, each slice
turned by ``rot90`` quarter turns counter-clockwise (T2Net turns its stored slices by one,
with OpenCV, before the FFT; that its stored arrays are the NIfTI voxel arrays as nibabel
reads them is our assumption: its NIfTI -> HDF5 step is not published). T2Net trains on every
fifth slice of that range (20, 25, ..., 115 and 119); ``slice_step`` 5 takes 20, 25, ..., 115.
Slices are centre-cropped or zero-padded to ``hr_size``. Magnitude images have no raw k-space,
so, as for ISLES, the HR k-space is the FFT of the real image
(:func:`cmfnet.mri.degrade.degrade_slice`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from scipy.ndimage import map_coordinates

from cmfnet.data.isles import NiftiVolume, _load, read_nifti_info
from cmfnet.data.paired import PairedSliceDataset, checked_hr_size, dominant_value
from cmfnet.mri.degrade import LowResPair, degrade_magnitude_slice
from cmfnet.runs.errors import DataError, one_line

log = logging.getLogger(__name__)

#: ``IXI<id>-<site>-<num>-<contrast>.nii[.gz]``; groups: subject id (``IXI002``), contrast.
IXI_NAME = re.compile(r"^(IXI\d+)-[A-Za-z]+-\d+-([A-Za-z0-9]+)\.nii(?:\.gz)?$")
CONTRASTS = ("T1", "T2", "PD")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class IXIVolume:
    """One contrast of one subject: file, shape (X, Y, Z) and affine (4, 4) from the header."""

    path: Path
    shape: tuple[int, int, int]
    affine: np.ndarray


def find_ixi_files(root: Path) -> dict[str, dict[str, list[Path]]]:
    """``{contrast: {subject id: [files]}}`` of the IXI-named NIfTI files at any depth under
    ``root`` (hidden files and folders never match)."""
    found: dict[str, dict[str, list[Path]]] = {}
    for path in sorted(root.rglob("IXI*")):
        match = IXI_NAME.match(path.name)
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if match and not hidden and path.is_file():
            found.setdefault(match[2], {}).setdefault(match[1], []).append(path)
    return found


def split_subjects(
    subjects: Sequence[str], fractions: Sequence[float], seed: int
) -> dict[str, list[str]]:
    """``{split: sorted ids}``: ``subjects`` ordered by SHA-256 of ``"<seed>:<id>"`` and cut by
    ``fractions`` (train, val, test; summing to 1) at rounded cumulative counts."""
    order = sorted(set(subjects), key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    first = round(fractions[0] * len(order))
    second = round((fractions[0] + fractions[1]) * len(order))
    parts = (order[:first], order[first:second], order[second:])
    return {split: sorted(part) for split, part in zip(SPLITS, parts)}


def voxel_mapping(aux: IXIVolume, target: IXIVolume) -> np.ndarray:
    """(4, 4) map from target voxel indices to auxiliary voxel indices through scanner space."""
    return np.linalg.inv(aux.affine) @ target.affine


def resample_slice(
    aux_volume: np.ndarray, mapping: np.ndarray, plane_shape: Sequence[int], slice_idx: int
) -> np.ndarray:
    """Target slice ``slice_idx`` (plane_shape (X, Y)) of the auxiliary volume (X', Y', Z'):
    trilinear samples at ``mapping @ (i, j, slice_idx, 1)``, 0 outside; (X, Y) float32."""
    i, j = np.meshgrid(np.arange(plane_shape[0]), np.arange(plane_shape[1]), indexing="ij")
    voxels = np.stack([i.ravel(), j.ravel(), np.full(i.size, slice_idx), np.ones(i.size)])
    coords = (mapping @ voxels)[:3]
    values = map_coordinates(aux_volume, coords, order=1, mode="constant", cval=0.0)
    return values.reshape(tuple(plane_shape)).astype(np.float32)


def overlap_fraction(
    aux: IXIVolume, target: IXIVolume, slices: Sequence[int], samples: int = 32
) -> float:
    """Share of the target's ``slices`` (voxels on a grid of at most ``samples`` x ``samples``
    per slice) whose mapped position lies inside the auxiliary volume."""
    axes = [np.unique(np.linspace(0, n - 1, min(n, samples)).round()) for n in target.shape[:2]]
    i, j, k = np.meshgrid(*axes, np.asarray(slices, dtype=float), indexing="ij")
    voxels = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    coords = (voxel_mapping(aux, target) @ voxels)[:3]
    upper = np.asarray(aux.shape, dtype=float)[:, None] - 1
    inside = np.all((coords >= -1e-6) & (coords <= upper + 1e-6), axis=0)
    return float(inside.mean())


def crop_or_pad(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre crop or zero-pad (H, W) to ``size`` (crop offset as :func:`center_crop`)."""
    out = np.zeros(size, dtype=image.dtype)
    src, dst = [], []
    for n, m in zip(image.shape, size):
        if n >= m:
            src.append(slice((n - m) // 2, (n - m) // 2 + m))
            dst.append(slice(0, m))
        else:
            dst.append(slice((m - n) // 2, (m - n) // 2 + n))
            src.append(slice(0, n))
    out[tuple(dst)] = image[tuple(src)]
    return out


def read_volume_info(path: Path) -> IXIVolume:
    """Header read (complete, 3-D, real; :func:`~cmfnet.data.isles.read_nifti_info`) plus the
    affine, checked finite and invertible."""
    info: NiftiVolume = read_nifti_info(path)
    affine = np.asarray(_load(path).affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-8:
        raise DataError(f"{path}: affine is singular or not finite: {affine[:3].tolist()}")
    return IXIVolume(path=path, shape=info.shape, affine=affine)


def read_volume(volume: IXIVolume) -> np.ndarray:
    """All voxels (X, Y, Z) float32 after the header's scaling, checked finite."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            data = np.asarray(_load(volume.path).dataobj, dtype=np.float32)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{volume.path}: cannot read its voxels ({one_line(err)})") from err
    data = data.reshape(volume.shape)
    bad = np.argwhere(~np.isfinite(data))
    if len(bad):
        raise DataError(
            f"{volume.path}: voxel {tuple(int(i) for i in bad[0])} is NaN or inf "
            f"({len(bad)} such voxels, after the header's scaling)"
        )
    return data


class IXIPairDataset(PairedSliceDataset):
    """Slices of IXI subject pairs: item i -> transform(LowResPair, target file name, slice).

    Args:
        root: folder holding the IXI files at any depth.
        split: which part of the seeded subject split this dataset is (train, val, test).
        scale: super-resolution factor; must divide ``hr_size``.
        transform: callable ``(LowResPair, fname, slice_idx, ...) -> sample``.
        subjects: ids of this split (``IXI002``, ...); ``None``: the seeded split.
        fractions: train, val, test shares of the subjects (sum 1).
        split_seed: seeds the subject order of the split.
        aux_contrast, target_contrast: two of T1, T2, PD.
        hr_size: in-plane size (H, W) after the turn; slices are centre-cropped/zero-padded.
        slice_range: [first, last) of the target's third voxel axis, clipped to the volume.
        slice_step: take every ``slice_step``-th slice of that range.
        rot90: counter-clockwise quarter turns of each slice (both contrasts).
        min_overlap: least share of the selected target slices the auxiliary volume must cover.
        cache_lowres: keep each slice's deterministic degradation in memory after first use.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        scale: int,
        transform: Callable,
        subjects: Optional[Sequence[str]] = None,
        fractions: Sequence[float] = (0.7, 0.1, 0.2),
        split_seed: int = 0,
        aux_contrast: str = "T1",
        target_contrast: str = "T2",
        hr_size: Sequence[int] = (256, 256),
        slice_range: Sequence[int] = (20, 120),
        slice_step: int = 1,
        rot90: int = 1,
        min_overlap: float = 0.5,
        cache_lowres: bool = True,
    ):
        super().__init__(root, transform, cache_lowres)
        self.hr_size = checked_hr_size(hr_size, scale)
        if split not in SPLITS:
            raise DataError(f"data.splits.{split}.split: '{split}' is not one of {SPLITS}")
        for key, value in (("aux_contrast", aux_contrast), ("target_contrast", target_contrast)):
            if value not in CONTRASTS:
                raise DataError(f"data.splits.{split}.{key}: '{value}' is not one of {CONTRASTS}")
        if aux_contrast == target_contrast:
            raise DataError(
                f"data.splits.{split}: aux_contrast and target_contrast are both {aux_contrast}"
            )
        if int(slice_step) < 1:
            raise DataError(f"data.splits.{split}.slice_step must be >= 1, got {slice_step}")
        self.scale, self.split, self.rot90 = scale, split, int(rot90) % 4
        self.contrasts = (aux_contrast, target_contrast)
        files = find_ixi_files(self.root)
        aux_files, target_files = files.get(aux_contrast, {}), files.get(target_contrast, {})
        if subjects is None:
            fractions = [float(f) for f in fractions]
            if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
                raise DataError(
                    f"data.splits.{split}.fractions: {fractions} must be three shares "
                    "(train, val, test) >= 0 summing to 1"
                )
            if not target_files:
                raise DataError(
                    f"{self.root}: no {target_contrast} files named "
                    f"IXI<id>-<site>-<num>-{target_contrast}.nii.gz at any depth"
                )
            names = split_subjects(sorted(target_files), fractions, split_seed)[split]
            if not names:
                raise DataError(
                    f"data.splits.{split}.fractions: {fractions} give the {split} split none "
                    f"of the {len(target_files)} subjects with a {target_contrast} file"
                )
            unpaired = [s for s in names if s not in aux_files]
            if unpaired:
                log.info(
                    "IXI %s: %d of %d subjects have no %s file and are left out: %s",
                    split,
                    len(unpaired),
                    len(names),
                    aux_contrast,
                    ", ".join(unpaired),
                )
            names = [s for s in names if s in aux_files]
            if not names:
                raise DataError(f"{self.root}: no {split} subject has a {aux_contrast} file")
        else:
            names = [str(s) for s in subjects]
            if not names:
                raise DataError(f"data.splits.{split}.subjects is empty")
        self.subject_ids = names
        self.pairs: list[tuple[IXIVolume, IXIVolume]] = []
        for name in names:
            aux_path = self._one_file(aux_files, name, aux_contrast, split)
            target_path = self._one_file(target_files, name, target_contrast, split)
            aux, target = read_volume_info(aux_path), read_volume_info(target_path)
            first, last = max(0, slice_range[0]), min(target.shape[2], slice_range[1])
            chosen = list(range(first, last, int(slice_step)))
            if not chosen:
                raise DataError(
                    f"{target.path}: data.slice_range {tuple(slice_range)} "
                    f"selects no slice of {target.shape[2]}"
                )
            covered = overlap_fraction(aux, target, chosen)
            if covered < min_overlap:
                raise DataError(
                    f"{aux.path}: its field of view covers {covered:.0%} of slices "
                    f"{chosen[0]}-{chosen[-1]} of {target.path.name} through the affines, "
                    f"below data.splits.{split}.min_overlap={min_overlap}"
                )
            pair_idx = len(self.pairs)
            self.pairs.append((aux, target))
            self.slices += [(pair_idx, s) for s in chosen]
        self._volumes: dict[Path, np.ndarray] = {}

    def _one_file(self, found: dict, subject: str, contrast: str, split: str) -> Path:
        paths = found.get(subject, [])
        if len(paths) != 1:
            listed = ": " + ", ".join(str(p) for p in paths) if paths else ""
            raise DataError(
                f"{self.root}: subject {subject} (data.splits.{split}) needs one "
                f"{subject}-<site>-<num>-{contrast}.nii.gz file, found {len(paths)}{listed}"
            )
        return paths[0]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_volumes"] = {}  # read again where it is needed, not sent to workers
        return state

    def _volume(self, volume: IXIVolume) -> np.ndarray:
        """The voxels of ``volume``, kept for the slices that follow (the two of one pair)."""
        if volume.path not in self._volumes:
            if len(self._volumes) >= 2:
                self._volumes.clear()
            self._volumes[volume.path] = read_volume(volume)
        return self._volumes[volume.path]

    def hr_slices(self, pair_idx: int, slice_idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(target, resampled auxiliary) HR slices, turned and cropped/padded: (H, W) float32."""
        aux, target = self.pairs[pair_idx]
        target_image = self._volume(target)[:, :, slice_idx]
        same_grid = aux.shape == target.shape and np.allclose(aux.affine, target.affine, atol=1e-4)
        aux_volume = self._volume(aux)
        if same_grid:
            aux_image = aux_volume[:, :, slice_idx]
        else:
            mapping = voxel_mapping(aux, target)
            aux_image = resample_slice(aux_volume, mapping, target.shape[:2], slice_idx)
        images = []
        for volume, image in ((target, target_image), (aux, aux_image)):
            spike = dominant_value(image)
            if spike is not None:
                raise DataError(
                    f"{volume.path}: voxel {spike} of target slice {slice_idx} outweighs the "
                    "rest of the slice beyond float32 precision (a corrupted value?)"
                )
            turned = np.rot90(image, self.rot90)
            images.append(np.ascontiguousarray(crop_or_pad(turned, self.hr_size)))
        return images[0], images[1]

    def degradation_settings(self) -> dict:
        return {
            "scale": int(self.scale),
            "hr_size": list(self.hr_size),
            "rot90": self.rot90,
            "contrasts": list(self.contrasts),
        }

    def build_lowres(self, pair_idx: int, slice_idx: int) -> LowResPair:
        target_hr, aux_hr = self.hr_slices(pair_idx, slice_idx)
        return degrade_magnitude_slice(target_hr, aux_hr, self.scale)

    def pair_paths(self, pair_idx: int) -> tuple[Path, Path]:
        aux, target = self.pairs[pair_idx]
        return aux.path, target.path
