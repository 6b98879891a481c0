"""Writing a synthetic volume as fastMRI writes its knee files: the ISMRMRD XML header and the HDF5
file (kspace, reconstruction_esc, attributes).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from cmfnet.mri.kspace import center_crop, ifft2c

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"


FIELD_STRENGTH_T = 3.0


GYROMAGNETIC_HZ_PER_T = 42.577478e6


def _fmt(value) -> str:
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def build_ismrmrd_header(
    *,
    hr_size: int,
    width: int,
    slices: int,
    fov_mm: float,
    thickness_mm: float,
    maximum: int,
    center: int,
    tr_ms: float,
    te_ms: float,
    protocol: str,
    patient_id: str = "synthetic",
    description: str = "cmfnet synthetic data",
    user_strings: Mapping[str, str] | None = None,
) -> str:
    """ISMRMRD XML header (elements in schema order) for a 2H x W single-coil Cartesian scan."""
    ns = ISMRMRD_NAMESPACE
    ET.register_namespace("", ns)

    def el(parent, tag, text=None):
        node = ET.SubElement(parent, f"{{{ns}}}{tag}")
        if text is not None:
            node.text = _fmt(text)
        return node

    def xyz(parent, tag, x, y, z):
        node = el(parent, tag)
        el(node, "x", x)
        el(node, "y", y)
        el(node, "z", z)

    def limit(parent, tag, lo, hi, mid):
        node = el(parent, tag)
        el(node, "minimum", lo)
        el(node, "maximum", hi)
        el(node, "center", mid)

    root = ET.Element(f"{{{ns}}}ismrmrdHeader")
    subj = el(root, "subjectInformation")
    el(subj, "patientID", patient_id)
    meas = el(root, "measurementInformation")
    el(meas, "measurementID", patient_id)
    el(meas, "patientPosition", "HFS")
    el(meas, "protocolName", protocol)
    el(meas, "seriesDescription", description)
    sysinfo = el(root, "acquisitionSystemInformation")
    el(sysinfo, "systemVendor", "cmfnet-synthetic")
    el(sysinfo, "systemModel", "simulated dual-echo TSE")
    el(sysinfo, "systemFieldStrength_T", float(FIELD_STRENGTH_T))
    el(sysinfo, "relativeReceiverNoiseBandwidth", 0.793)
    el(sysinfo, "receiverChannels", 1)
    el(sysinfo, "institutionName", "cmfnet")
    cond = el(root, "experimentalConditions")
    el(cond, "H1resonanceFrequency_Hz", int(round(GYROMAGNETIC_HZ_PER_T * FIELD_STRENGTH_T)))
    enc = el(root, "encoding")
    space = el(enc, "encodedSpace")
    xyz(space, "matrixSize", 2 * hr_size, width, 1)
    xyz(space, "fieldOfView_mm", 2.0 * fov_mm, fov_mm * width / hr_size, float(thickness_mm))
    recon = el(enc, "reconSpace")
    xyz(recon, "matrixSize", hr_size, hr_size, 1)
    xyz(recon, "fieldOfView_mm", float(fov_mm), float(fov_mm), float(thickness_mm))
    lims = el(enc, "encodingLimits")
    limit(lims, "kspace_encoding_step_1", 0, maximum, center)
    limit(lims, "kspace_encoding_step_2", 0, 0, 0)
    limit(lims, "average", 0, 0, 0)
    limit(lims, "slice", 0, slices - 1, slices // 2)
    limit(lims, "contrast", 0, 0, 0)
    limit(lims, "phase", 0, 0, 0)
    limit(lims, "repetition", 0, 0, 0)
    limit(lims, "set", 0, 0, 0)
    limit(lims, "segment", 0, 0, 0)
    el(enc, "trajectory", "cartesian")
    el(enc, "echoTrainLength", 8)
    seq = el(root, "sequenceParameters")
    el(seq, "TR", float(tr_ms))
    el(seq, "TE", float(te_ms))
    el(seq, "flipAngle_deg", 90.0)
    el(seq, "sequence_type", "TurboSpinEcho")
    el(seq, "echo_spacing", 12.0)
    if user_strings:
        user = el(root, "userParameters")
        for name, value in user_strings.items():
            par = el(user, "userParameterString")
            el(par, "name", name)
            el(par, "value", value)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + body


def _atomic_target(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_fastmri_volume(
    path: str | os.PathLike,
    kspace: np.ndarray,
    header: str,
    recon_size: tuple[int, int],
    attrs: Mapping[str, object] | None = None,
) -> Path:
    """Write one fastMRI single-coil volume atomically (``name.tmp`` then ``os.replace``).

    ``kspace``: complex (slices, 2H, W), stored as complex64. ``reconstruction_esc`` (float32,
    (slices, *recon_size)) is computed here from the stored complex64 k-space as
    |center_crop(ifft2c(kspace))|; attrs ``max`` and ``norm`` are that volume's max and
    Frobenius norm. Extra ``attrs`` are stored as given (strings, numbers, 1-D arrays).
    """
    path = Path(path)
    kspace = np.ascontiguousarray(kspace, dtype=np.complex64)
    if kspace.ndim != 3:
        raise ValueError(f"kspace must be (slices, rows, cols), got shape {kspace.shape}")
    image = ifft2c(kspace.astype(np.complex128))
    recon = np.abs(center_crop(image, recon_size)).astype(np.float32)
    tmp = _atomic_target(path)
    try:
        with h5py.File(tmp, "w", track_order=True) as hf:
            hf.create_dataset(
                "ismrmrd_header", data=header, dtype=h5py.string_dtype("utf-8"), track_times=False
            )
            hf.create_dataset("kspace", data=kspace, track_times=False)
            hf.create_dataset("reconstruction_esc", data=recon, track_times=False)
            for key, value in (attrs or {}).items():
                hf.attrs[key] = value
            hf.attrs["max"] = float(recon.max())
            hf.attrs["norm"] = float(np.linalg.norm(recon.astype(np.float64)))
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return path
