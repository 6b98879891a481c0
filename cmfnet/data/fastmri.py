"""fastMRI single-coil knee pairs (PD auxiliary, PD-FS target) for joint rec + SR.

Layout (DATA.md): one HDF5 file per volume with ``kspace`` complex64 (slices, rows, cols),
``reconstruction_esc`` float32 (slices, H, W), a scalar ``ismrmrd_header`` XML and attrs.
Pairs come from a CSV of ``pd_file,pdfs_file[,score]`` rows (MINet's
``singlecoil_{train,val}_split_less.csv``); slice i of one file is paired with slice i of the
other over the smaller slice count. The published CSVs are read as they are: names with or
without ``.h5``, an optional header, an optional UTF-8 BOM, the CSV inside the split folder (the
CMF-Net release) or beside it (MINet).

``cmfnet predict`` reads with the same functions and checks, also in fastMRI's test layout
(``test_layout``): the HR target dataset may be absent, and a ``mask`` dataset (cols,) marks
k-space that is already undersampled (see :mod:`cmfnet.commands.predict` for how such files
are degraded).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence

import h5py
import numpy as np

from cmfnet.data.paired import PairedSliceDataset, dominant_value
from cmfnet.data.pairs_csv import PairsCsv, find_pairs_csv, listed_file, read_pairs_csv
from cmfnet.mri.degrade import LowResPair, degrade_slice, lowres_shape
from cmfnet.mri.kspace import center_crop, ifft2c
from cmfnet.runs.errors import DataError, one_line

log = logging.getLogger(__name__)


ISMRMRD_NS = {"ismrmrd": "http://www.ismrm.org/ISMRMRD"}


# What h5py raises for corrupted files: broken metadata surfaces as any of these, not only OSError.
HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


@dataclass(frozen=True, eq=False)
class VolumeInfo:
    """Metadata of one fastMRI volume, read without loading its arrays.

    ``target_key`` is the HR target dataset read with each slice (None: the file has none);
    ``column_mask`` is the float32 (cols,) 0/1 mask of a file whose k-space is already
    undersampled (the test layout's ``mask`` dataset), else None.
    """

    path: Path
    num_slices: int
    kspace_shape: tuple[int, int]
    recon_size: tuple[int, int]
    padding_left: int
    padding_right: int
    acquisition: str
    target_key: Optional[str]
    column_mask: Optional[np.ndarray] = None


def _header_int(root: ET.Element, path: Sequence[str], fname: Path) -> int:
    query = "/".join(f"ismrmrd:{tag}" for tag in path)
    node = root.find(query, ISMRMRD_NS)
    if node is None or node.text is None:
        raise DataError(f"{fname}: ismrmrd_header lacks {'/'.join(path)}")
    try:
        return int(node.text)
    except ValueError as err:
        raise DataError(
            f"{fname}: ismrmrd_header {'/'.join(path)} is not an integer ({node.text!r})"
        ) from err


def parse_ismrmrd_header(xml: bytes | str, fname: Path) -> dict:
    """Recon size, encoded size and the acquired column range from an ISMRMRD header.

    padding_left = cols // 2 - center and padding_right = padding_left + maximum + 1 (fastMRI's
    rule); columns outside [padding_left, padding_right) were not acquired.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise DataError(f"{fname}: ismrmrd_header is not valid XML ({err})") from err
    enc = ["encoding", "encodedSpace", "matrixSize"]
    rec = ["encoding", "reconSpace", "matrixSize"]
    lim = ["encoding", "encodingLimits", "kspace_encoding_step_1"]
    enc_cols = _header_int(root, enc + ["y"], fname)
    center = _header_int(root, lim + ["center"], fname)
    maximum = _header_int(root, lim + ["maximum"], fname)
    padding_left = enc_cols // 2 - center
    return {
        "encoded_size": (_header_int(root, enc + ["x"], fname), enc_cols),
        "recon_size": (
            _header_int(root, rec + ["x"], fname),
            _header_int(root, rec + ["y"], fname),
        ),
        "padding_left": padding_left,
        "padding_right": padding_left + maximum + 1,
    }


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")
    except HDF5_ERRORS as err:
        raise DataError(f"{path}: not a readable HDF5 file ({one_line(err)})") from err


@contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn any h5py error raised while reading ``what`` into a one-line DataError naming
    ``path``."""
    try:
        yield
    except DataError:
        raise
    except HDF5_ERRORS as err:
        raise DataError(
            f"{path}: cannot read {what}, the file is corrupted ({one_line(err)})"
        ) from err


def _dataset(hf: h5py.File, key: str, path: Path) -> h5py.Dataset:
    """``hf[key]``, checked to exist and to be a dataset (not a group)."""
    if key not in hf:
        raise DataError(f"{path}: missing dataset '{key}'")
    node = hf[key]
    if not isinstance(node, h5py.Dataset):
        raise DataError(f"{path}: '{key}' is a {type(node).__name__}, expected a dataset")
    return node


def _header_xml(node: h5py.Dataset, path: Path) -> bytes:
    """The ISMRMRD header's XML bytes; it must be a scalar string dataset."""
    value = node[()] if node.shape == () else None
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise DataError(
            f"{path}: 'ismrmrd_header' must be a scalar XML string, "
            f"got {node.dtype} of shape {node.shape}"
        )
    return value


def _column_mask(node: h5py.Dataset, path: Path, cols: int) -> np.ndarray:
    """The test layout's ``mask`` dataset as a float32 (cols,) 0/1 array, checked."""
    mask = np.asarray(node[()]).astype(np.float32)
    if mask.shape != (cols,):
        raise DataError(
            f"{path}: 'mask' has shape {mask.shape}, expected ({cols},) for the k-space columns"
        )
    if not np.isin(mask, (0.0, 1.0)).all():
        raise DataError(f"{path}: 'mask' must hold only 0 and 1 values")
    if not mask.any():
        raise DataError(f"{path}: 'mask' samples no column")
    return mask


def read_volume_info(
    path: Path, target_key: str = "reconstruction_esc", test_layout: bool = False
) -> VolumeInfo:
    """Check a fastMRI file's keys, dtypes and shapes and return its metadata.

    ``test_layout`` also accepts fastMRI's test layout: a file without the ``target_key``
    dataset (its ``VolumeInfo.target_key`` is None) and a ``mask`` dataset of the sampled k-space
    columns (``VolumeInfo.column_mask``); otherwise the target is required and a mask ignored.
    """
    with _open(path) as hf, _reading(path, "its metadata"):
        kspace = _dataset(hf, "kspace", path)
        header_xml = _header_xml(_dataset(hf, "ismrmrd_header", path), path)
        if kspace.ndim != 3 or not np.issubdtype(kspace.dtype, np.complexfloating):
            raise DataError(
                f"{path}: 'kspace' must be complex (slices, rows, cols), "
                f"got {kspace.dtype} {kspace.shape}"
            )
        if kspace.shape[0] == 0:
            raise DataError(f"{path}: the volume has no slices")
        header = parse_ismrmrd_header(header_xml, path)
        recon_size = header["recon_size"]
        if min(recon_size) < 1:
            raise DataError(f"{path}: header's recon size {recon_size} is empty")
        if test_layout and target_key not in hf:
            target_key = None
        if target_key is not None:
            target = _dataset(hf, target_key, path)
            if target.ndim != 3 or not np.issubdtype(target.dtype, np.floating):
                raise DataError(
                    f"{path}: '{target_key}' must be float (slices, H, W), "
                    f"got {target.dtype} {target.shape}"
                )
            if kspace.shape[0] != target.shape[0]:
                raise DataError(
                    f"{path}: 'kspace' has {kspace.shape[0]} slices "
                    f"but '{target_key}' has {target.shape[0]}"
                )
            if tuple(target.shape[1:]) != recon_size:
                raise DataError(
                    f"{path}: '{target_key}' is {target.shape[1:]} "
                    f"but the header's recon size is {recon_size}"
                )
        if recon_size[0] > kspace.shape[1] or recon_size[1] > kspace.shape[2]:
            raise DataError(
                f"{path}: recon size {recon_size} exceeds the k-space size {kspace.shape[1:]}"
            )
        if not 0 <= header["padding_left"] < header["padding_right"] <= kspace.shape[2]:
            raise DataError(
                f"{path}: header's acquired columns "
                f"[{header['padding_left']}, {header['padding_right']}) "
                f"lie outside {kspace.shape[2]} columns"
            )
        has_mask = test_layout and "mask" in hf
        return VolumeInfo(
            path=path,
            num_slices=kspace.shape[0],
            kspace_shape=tuple(kspace.shape[1:]),
            recon_size=recon_size,
            padding_left=header["padding_left"],
            padding_right=header["padding_right"],
            acquisition=str(hf.attrs.get("acquisition", "")),
            target_key=target_key,
            column_mask=_column_mask(_dataset(hf, "mask", path), path, kspace.shape[2])
            if has_mask
            else None,
        )


def read_slice(info: VolumeInfo, slice_idx: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Complex HR image (centre crop of ifft2c(kspace), times the file's own mask if it has one)
    and HR target (None without ``info.target_key``) of one slice, checked finite.

    Returns (H, W) complex64 and (H, W) float32, (H, W) = the header's recon size.
    """
    with _open(info.path) as hf, _reading(info.path, f"slice {slice_idx}"):
        kspace = hf["kspace"][slice_idx]
        target = None if info.target_key is None else hf[info.target_key][slice_idx]
    if not np.isfinite(kspace).all():
        raise DataError(f"{info.path}: slice {slice_idx} k-space contains NaN or inf")
    if target is not None and not np.isfinite(target).all():
        raise DataError(f"{info.path}: slice {slice_idx} '{info.target_key}' contains NaN or inf")
    spike = dominant_value(kspace)
    if spike is not None:
        raise DataError(
            f"{info.path}: slice {slice_idx} k-space value at {spike} outweighs the rest of the "
            "slice beyond float32 precision (a corrupted value?)"
        )
    if info.column_mask is not None:
        kspace = kspace * info.column_mask[None, :]
    with np.errstate(over="ignore", invalid="ignore"):
        image = center_crop(ifft2c(kspace), info.recon_size)
        target = None if target is None else target.astype(np.float32)
    if not (np.isfinite(image).all() and (target is None or np.isfinite(target).all())):
        values = "k-space" if target is None else f"k-space or '{info.target_key}'"
        raise DataError(
            f"{info.path}: slice {slice_idx} overflows float32 ({values} values too large)"
        )
    return image, target


def check_contrasts(contrasts: object) -> Optional[dict[str, str]]:
    """``{"aux": ..., "target": ...}`` (the acquisitions a pair's two files must carry), or None
    (no check); ValueError naming ``contrasts`` otherwise."""
    if contrasts is None:
        return None
    keys = set(contrasts) if isinstance(contrasts, Mapping) else None
    if keys != {"aux", "target"} or not all(isinstance(contrasts[k], str) for k in keys):
        raise ValueError(
            "contrasts must be {aux: <acquisition>, target: <acquisition>} (fastMRI knee: "
            f"aux CORPD_FBK, target CORPDFS_FBK) or null, got {contrasts!r}"
        )
    return {"aux": contrasts["aux"], "target": contrasts["target"]}


def pair_contrast_error(
    aux: VolumeInfo, target: VolumeInfo, expected: dict[str, str], csv_path: Path
) -> Optional[str]:
    """Why a listed pair's files do not carry the expected acquisitions (None if they do, or a
    file carries none): names the CSV row, both files' acquisitions and the expectation."""
    found = {"aux": aux.acquisition, "target": target.acquisition}
    if all(not found[k] or found[k] == expected[k] for k in found):
        return None
    swapped = found == {"aux": expected["target"], "target": expected["aux"]}
    return (
        f"{csv_path}: the row {aux.path.name},{target.path.name} pairs auxiliary "
        f"{found['aux'] or '(none)'} with target {found['target'] or '(none)'}, but the data "
        f"config expects auxiliary {expected['aux']} and target {expected['target']}"
        + ("; the CSV's columns look swapped" if swapped else "")
        + " (set contrasts to what you mean, or null to skip the check)"
    )


class FastMRIPairDataset(PairedSliceDataset):
    """Slices of PD/PD-FS pairs: item i -> transform(LowResPair, target file name, slice index).

    Args:
        root: folder of .h5 volumes (other files in it are ignored).
        pairs_csv: CSV of ``pd_file,pdfs_file[,score]`` rows, names relative to ``root``: one
            path, a list of candidate paths or None (see :func:`find_pairs_csv`).
        scale: super-resolution factor; must divide the recon size.
        transform: callable ``(LowResPair, fname, slice_idx) -> sample``.
        target_key: HR target dataset (``reconstruction_esc`` for single-coil).
        cache_lowres: keep each slice's deterministic degradation in memory after first use.
        undersampled_transform: None (training) requires the HR target in every file and reads
            k-space as fully sampled. Given (``cmfnet predict``), files are read in fastMRI's test
            layout too: a file without the HR target gets ``|HR image|`` as a placeholder target,
            and a target file with its own ``mask`` (k-space already undersampled) is read with
            that mask and its slices go through this transform instead (it must draw no new
            mask); an auxiliary file must be fully sampled.
        contrasts: the acquisitions (the files' ``acquisition`` attribute) each pair must have,
            ``{"aux": ..., "target": ...}``; a pair that differs is refused naming its CSV row
            (swapped columns train PD from PD-FS otherwise); files without the attribute are
            accepted with one warning. None: not checked.
    """

    def __init__(
        self,
        root: str | Path,
        pairs_csv: PairsCsv,
        scale: int,
        transform: Callable,
        target_key: str = "reconstruction_esc",
        cache_lowres: bool = True,
        undersampled_transform: Optional[Callable] = None,
        contrasts: Optional[Mapping[str, str]] = None,
    ):
        super().__init__(root, transform, cache_lowres)
        expected = check_contrasts(contrasts)
        unlabelled: list[Path] = []
        self.scale = scale
        self.target_key = target_key
        self.undersampled_transform = undersampled_transform
        test_layout = undersampled_transform is not None
        self.pairs: list[tuple[VolumeInfo, VolumeInfo]] = []
        self.pairs_csv = find_pairs_csv(pairs_csv, self.root)
        for pd_name, pdfs_name in read_pairs_csv(self.pairs_csv):
            aux = read_volume_info(
                listed_file(self.root, pd_name, self.pairs_csv), target_key, test_layout
            )
            target = read_volume_info(
                listed_file(self.root, pdfs_name, self.pairs_csv), target_key, test_layout
            )
            if expected is not None:
                error = pair_contrast_error(aux, target, expected, self.pairs_csv)
                if error:
                    raise DataError(error)
                unlabelled += [v.path for v in (aux, target) if not v.acquisition]
            if aux.column_mask is not None:
                raise DataError(
                    f"{aux.path}: the auxiliary file carries a 'mask' (undersampled k-space); "
                    "the guide contrast must be fully sampled"
                )
            if aux.recon_size != target.recon_size:
                raise DataError(
                    f"{target.path}: recon size {target.recon_size} "
                    f"differs from its pair {aux.path.name} {aux.recon_size}"
                )
            try:
                lowres_shape(target.recon_size, scale)
            except ValueError as err:
                raise DataError(f"{target.path}: {err}") from err
            pair_idx = len(self.pairs)
            self.pairs.append((aux, target))
            self.slices += [(pair_idx, s) for s in range(min(aux.num_slices, target.num_slices))]
        if unlabelled:
            log.warning(
                "%d file(s) listed in %s carry no 'acquisition' attribute (e.g. %s): their "
                "contrast is not checked",
                len(unlabelled),
                self.pairs_csv,
                unlabelled[0].name,
            )

    def degradation_settings(self) -> dict:
        return {
            "scale": int(self.scale),
            "target_key": self.target_key,
            "test_layout": self.undersampled_transform is not None,
        }

    def build_lowres(self, pair_idx: int, slice_idx: int) -> LowResPair:
        aux, target = self.pairs[pair_idx]
        target_image, target_hr = read_slice(target, slice_idx)
        aux_image, _ = read_slice(aux, slice_idx)
        return degrade_slice(target_image, aux_image, self.scale, target_hr=target_hr)

    def transform_for(self, pair_idx: int) -> Callable:
        """``undersampled_transform`` for a target that carries its own mask, else ``transform``."""
        return (
            self.transform
            if self.pairs[pair_idx][1].column_mask is None
            else self.undersampled_transform
        )

    def pair_paths(self, pair_idx: int) -> tuple[Path, Path]:
        aux, target = self.pairs[pair_idx]
        return aux.path, target.path
