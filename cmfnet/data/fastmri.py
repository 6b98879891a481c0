"""fastMRI single-coil knee pairs (PD auxiliary, PD-FS target) for joint rec + SR.

Layout (DATA.md): one HDF5 file per volume with ``kspace`` complex64 (slices, rows, cols),
``reconstruction_esc`` float32 (slices, H, W), a scalar ``ismrmrd_header`` XML and attrs.
Pairs come from a CSV of ``pd_file,pdfs_file[,score]`` rows (MINet's
``singlecoil_{train,val}_split_less.csv``); slice i of one file is paired with slice i of the
other over the smaller slice count.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import h5py
import numpy as np

from cmfnet.data.errors import DataError
from cmfnet.data.paired import PairedSliceDataset, dominant_value, one_line
from cmfnet.degrade import LowResPair, degrade_slice, lowres_shape
from cmfnet.kspace import center_crop, ifft2c

ISMRMRD_NS = {"ismrmrd": "http://www.ismrm.org/ISMRMRD"}
# What h5py raises for corrupted files: broken metadata surfaces as any of these, not only OSError.
HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


@dataclass(frozen=True)
class VolumeInfo:
    """Metadata of one fastMRI volume, read without loading its arrays."""

    path: Path
    num_slices: int
    kspace_shape: tuple[int, int]
    recon_size: tuple[int, int]
    padding_left: int
    padding_right: int
    acquisition: str


def _header_int(root: ET.Element, path: Sequence[str], fname: Path) -> int:
    query = "/".join(f"ismrmrd:{tag}" for tag in path)
    node = root.find(query, ISMRMRD_NS)
    if node is None or node.text is None:
        raise DataError(f"{fname}: ismrmrd_header lacks {'/'.join(path)}")
    try:
        return int(node.text)
    except ValueError as err:
        raise DataError(f"{fname}: ismrmrd_header {'/'.join(path)} is not an integer ({node.text!r})") from err


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
        "recon_size": (_header_int(root, rec + ["x"], fname), _header_int(root, rec + ["y"], fname)),
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
    """Turn any h5py error raised while reading ``what`` into a one-line DataError naming ``path``."""
    try:
        yield
    except DataError:
        raise
    except HDF5_ERRORS as err:
        raise DataError(f"{path}: cannot read {what}, the file is corrupted ({one_line(err)})") from err


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
        raise DataError(f"{path}: 'ismrmrd_header' must be a scalar XML string, got {node.dtype} of shape {node.shape}")
    return value


def read_volume_info(path: Path, target_key: Optional[str] = "reconstruction_esc") -> VolumeInfo:
    """Check a fastMRI file's keys, dtypes and shapes and return its metadata.

    ``target_key=None`` checks k-space and header only (files without an HR target, such as
    fastMRI's test split).
    """
    with _open(path) as hf, _reading(path, "its metadata"):
        kspace = _dataset(hf, "kspace", path)
        header_xml = _header_xml(_dataset(hf, "ismrmrd_header", path), path)
        if kspace.ndim != 3 or not np.issubdtype(kspace.dtype, np.complexfloating):
            raise DataError(f"{path}: 'kspace' must be complex (slices, rows, cols), got {kspace.dtype} {kspace.shape}")
        if kspace.shape[0] == 0:
            raise DataError(f"{path}: the volume has no slices")
        header = parse_ismrmrd_header(header_xml, path)
        recon_size = header["recon_size"]
        if min(recon_size) < 1:
            raise DataError(f"{path}: header's recon size {recon_size} is empty")
        if target_key is not None:
            target = _dataset(hf, target_key, path)
            if target.ndim != 3 or not np.issubdtype(target.dtype, np.floating):
                raise DataError(f"{path}: '{target_key}' must be float (slices, H, W), got {target.dtype} {target.shape}")
            if kspace.shape[0] != target.shape[0]:
                raise DataError(f"{path}: 'kspace' has {kspace.shape[0]} slices but '{target_key}' has {target.shape[0]}")
            if tuple(target.shape[1:]) != recon_size:
                raise DataError(f"{path}: '{target_key}' is {target.shape[1:]} but the header's recon size is {recon_size}")
        if recon_size[0] > kspace.shape[1] or recon_size[1] > kspace.shape[2]:
            raise DataError(f"{path}: recon size {recon_size} exceeds the k-space size {kspace.shape[1:]}")
        if not 0 <= header["padding_left"] < header["padding_right"] <= kspace.shape[2]:
            raise DataError(f"{path}: header's acquired columns [{header['padding_left']}, {header['padding_right']}) lie outside {kspace.shape[2]} columns")
        return VolumeInfo(
            path=path,
            num_slices=kspace.shape[0],
            kspace_shape=tuple(kspace.shape[1:]),
            recon_size=recon_size,
            padding_left=header["padding_left"],
            padding_right=header["padding_right"],
            acquisition=str(hf.attrs.get("acquisition", "")),
        )


def read_slice(info: VolumeInfo, slice_idx: int, target_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Complex HR image (centre crop of ifft2c(kspace)) and HR target of one slice, checked finite.

    Returns (H, W) complex64 and (H, W) float32, (H, W) = the header's recon size.
    """
    with _open(info.path) as hf, _reading(info.path, f"slice {slice_idx}"):
        kspace = hf["kspace"][slice_idx]
        target = hf[target_key][slice_idx]
    if not np.isfinite(kspace).all():
        raise DataError(f"{info.path}: slice {slice_idx} k-space contains NaN or inf")
    if not np.isfinite(target).all():
        raise DataError(f"{info.path}: slice {slice_idx} '{target_key}' contains NaN or inf")
    spike = dominant_value(kspace)
    if spike is not None:
        raise DataError(f"{info.path}: slice {slice_idx} k-space value at {spike} outweighs the rest of the "
                        "slice beyond float32 precision (a corrupted value?)")
    with np.errstate(over="ignore", invalid="ignore"):
        image = center_crop(ifft2c(kspace), info.recon_size)
        target = target.astype(np.float32)
    if not (np.isfinite(image).all() and np.isfinite(target).all()):
        raise DataError(f"{info.path}: slice {slice_idx} overflows float32 (k-space or '{target_key}' values too large)")
    return image, target


AUX_COLUMNS = ("pd_file", "pd", "aux_file", "aux")
TARGET_COLUMNS = ("pdfs_file", "pdfs", "target_file", "target")


def read_pairs_csv(csv_path: Path) -> list[tuple[str, str]]:
    """(pd_file, pdfs_file) rows of a pairing CSV. Without a header the first two columns are
    the auxiliary and the target file (MINet's layout); a header row must name both columns
    (``pd_file``, ``pdfs_file`` or ``aux``/``target``), in any order."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: pairing CSV not found")
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{csv_path}: not a readable CSV text file ({one_line(err)})") from err
    pairs = []
    columns = (0, 1)
    for line_no, row in enumerate(rows, start=1):
        row = [cell.strip() for cell in row]
        if not row or not any(row):
            continue
        if line_no == 1 and not any(cell.endswith(".h5") for cell in row[:2]):
            header = [cell.lower() for cell in row]
            aux = next((header.index(name) for name in AUX_COLUMNS if name in header), None)
            target = next((header.index(name) for name in TARGET_COLUMNS if name in header), None)
            if aux is None or target is None:
                raise DataError(f"{csv_path}: line 1 is neither two .h5 names nor a header naming the "
                                f"'pd_file' and 'pdfs_file' columns, got {row}")
            columns = (aux, target)
            continue
        names = [row[i] for i in columns if i < len(row)]
        if len(names) < 2 or not all(name.endswith(".h5") for name in names):
            raise DataError(f"{csv_path}: line {line_no} needs 'pd_file.h5,pdfs_file.h5[,score]', got {row}")
        if names[0] == names[1]:
            raise DataError(f"{csv_path}: line {line_no} pairs {names[0]} with itself")
        pairs.append((names[0], names[1]))
    if not pairs:
        raise DataError(f"{csv_path}: no pairs listed")
    seen: set[str] = set()
    for pd_file, pdfs_file in pairs:
        if pdfs_file in seen:
            raise DataError(f"{csv_path}: target file {pdfs_file} is listed in more than one pair")
        seen.add(pdfs_file)
    return pairs


class FastMRIPairDataset(PairedSliceDataset):
    """Slices of PD/PD-FS pairs: item i -> transform(LowResPair, target file name, slice index).

    Args:
        root: folder of .h5 volumes (other files in it are ignored).
        pairs_csv: CSV of ``pd_file,pdfs_file[,score]`` rows, names relative to ``root``.
        scale: super-resolution factor; must divide the recon size.
        transform: callable ``(LowResPair, fname, slice_idx) -> sample``.
        target_key: HR target dataset (``reconstruction_esc`` for single-coil).
        cache_lowres: keep each slice's deterministic degradation in memory after first use.
    """

    def __init__(
        self,
        root: str | Path,
        pairs_csv: str | Path,
        scale: int,
        transform: Callable,
        target_key: str = "reconstruction_esc",
        cache_lowres: bool = True,
    ):
        super().__init__(root, transform, cache_lowres)
        self.scale = scale
        self.target_key = target_key
        self.pairs: list[tuple[VolumeInfo, VolumeInfo]] = []
        for pd_name, pdfs_name in read_pairs_csv(Path(pairs_csv)):
            aux = read_volume_info(self.root / pd_name, target_key)
            target = read_volume_info(self.root / pdfs_name, target_key)
            if aux.recon_size != target.recon_size:
                raise DataError(
                    f"{target.path}: recon size {target.recon_size} differs from its pair {aux.path.name} {aux.recon_size}"
                )
            try:
                lowres_shape(target.recon_size, scale)
            except ValueError as err:
                raise DataError(f"{target.path}: {err}") from err
            pair_idx = len(self.pairs)
            self.pairs.append((aux, target))
            self.slices += [(pair_idx, s) for s in range(min(aux.num_slices, target.num_slices))]

    def build_lowres(self, pair_idx: int, slice_idx: int) -> LowResPair:
        aux, target = self.pairs[pair_idx]
        target_image, target_hr = read_slice(target, slice_idx, self.target_key)
        aux_image, _ = read_slice(aux, slice_idx, self.target_key)
        return degrade_slice(target_image, aux_image, self.scale, target_hr=target_hr)

    def pair_paths(self, pair_idx: int) -> tuple[Path, Path]:
        aux, target = self.pairs[pair_idx]
        return aux.path, target.path
