"""Offline synthetic multi-contrast MRI data in the exact fastMRI single-coil layout.

Nothing here touches the network: the anatomy comes either from the MNI ICBM152 2009 templates
that ship inside nilearn's wheel (read by path with nibabel; nilearn itself is not imported) or
from an analytic Shepp-Logan-style ellipsoid phantom.

Pipeline per synthetic subject (one subject = one co-registered pair of volumes)
---------------------------------------------------------------------------------
1. **Anatomy.** Tissue fraction maps (partial volumes) are sampled on an ``H x H`` grid for ``S``
   consecutive axial template slices. The in-plane geometry is one resampling step: the fixed
   bounding square of the head (FOV ``fov_mm``, the same for every slice so the pixel size is
   constant over a volume) is mapped to ``H x H`` pixels, composed with a random in-plane affine
   (rotation +-5 deg, isotropic scale sd 3 %, anisotropy sd 2 %, translation sd 1.5 % of the FOV)
   and a smooth random elastic displacement (cubic interpolation of a 6 x 6 x n_z grid of
   Gaussian control values, sd 1.2 % of the FOV ~ 2.6 mm for the MNI head), and evaluated with
   ``scipy.ndimage.map_coordinates`` (cubic). This replaces a crop + ``zoom`` + warp chain by a
   single interpolation. When a pixel is larger than a template voxel the template slice is
   Gaussian-prefiltered first (sigma = 0.5 sqrt(r^2 - 1) voxels, r = pixel/voxel) to avoid
   aliasing. Displacements are in-plane only, so every slice keeps its template z index and the
   train/val/test anatomy stays disjoint (see *Slabs*).

   * ``mni``: GM and WM probability maps of the ICBM152 2009 (nlin sym 09a) templates,
     197 x 233 x 189 at 1 mm. Brain support = (skull-stripped T1 template > 0), Gaussian
     smoothed (sigma 0.6 voxel); CSF = clip(max(support, GM + WM) - GM - WM, 0, 1).
     Orientation: rows run anterior -> posterior, columns patient right -> left (radiological).
     FOV 220 mm square centred on the brain's bounding box; slice thickness 1 mm.
   * ``phantom``: the ten ellipses of the modified Shepp-Logan phantom (Shepp & Logan 1974,
     Toft 1996 geometry) extended to ellipsoids along z, each painted with one tissue
     (scalp fat, WM, CSF ventricles, GM, a long-T2 lesion), partial volumes by 3 x 3
     supersampling. FOV 220 mm (2.2 phantom units), 80 virtual slices of 2 mm.

2. **Contrast.** Partial-volume linear mixing of the spin-echo signal of each tissue,
   ``S = sum_t f_t * PD_t * (1 - exp(-TR / T1_t)) * exp(-TE / T2_t)``, for a dual-echo turbo
   spin echo at 3 T (TR = 4000 ms): auxiliary = PD-weighted echo (TE = 12 ms), target =
   T2-weighted echo (TE = 100 ms). Both echoes of a dual-echo acquisition (as in the IXI PD/T2
   data) are co-registered by construction. Tissue parameters (3 T; ms):

   ============  ======  ======  =====  ============================================
   tissue        T1      T2      PD     source (approximate literature values)
   ============  ======  ======  =====  ============================================
   WM            832     80      0.69   Wansapura et al., JMRI 1999 (T1, T2); PD ~0.69
   GM            1331    110     0.80   Wansapura et al., JMRI 1999 (T1, T2); PD ~0.80
   CSF           4200    1800    1.00   CSF T1 ~4.2-4.4 s at 3 T; T2 reported 1-2 s
   fat (phantom) 371     133     0.90   Gold et al., AJR 2004 (subcutaneous fat, 3 T)
   lesion (ph.)  1700    180     0.85   illustrative edema-like lesion (phantom only)
   ============  ======  ======  =====  ============================================

   Resulting PD-weighted signals: GM 0.68 > CSF 0.61 ~ WM 0.59; T2-weighted: CSF 0.58 >
   GM 0.31 > WM 0.20. Per subject each T1, T2 and PD is multiplied by (1 + 0.03 z), z a standard
   normal clipped to +-2 (drawn once per subject, shared by both contrasts).

3. **Complex image.** ``image = SIGNAL_SCALE * S * b(x, y) * exp(i phi_c(x, y, z))`` with a
   receive-field magnitude ``b`` (1 + smooth 2nd-order polynomial, within ~0.85..1.15, shared by
   both contrasts) and a smooth phase: a shared 2nd-order polynomial in (x, y) plus a linear z
   term (constant uniform in [-pi, pi)), plus a smaller contrast-specific polynomial.
   ``SIGNAL_SCALE = 1e-4`` puts magnitudes at fastMRI-like values (recon max ~ 1e-4).

4. **k-space in fastMRI layout.** The ``H x H`` image is placed at rows ``H//2 : H//2 + H`` of a
   ``2H x W`` field of view (2x readout oversampling; columns = phase encoding, zero-padded from
   ``H`` to ``W``; ``W >= H`` is required so that the ``H x H`` reconstruction crop exists, as in
   the fastMRI knee data), at exactly the block ``center_crop`` takes back. ``kspace =
   fft2c(field)`` plus complex white Gaussian noise with standard deviation (per real and
   imaginary part) ``sigma = noise * mean |PD-weighted image| over the brain`` (the same sigma for
   both echoes, as for one receiver; orthonormal FFTs give the same sigma per image pixel).
   Columns outside ``[padding_left, padding_right)`` are then zeroed exactly like fastMRI with
   ``padding_left = W//2 - center``, ``padding_right = padding_left + maximum + 1``, where
   ``encodingLimits/kspace_encoding_step_1`` has ``maximum = W - 2m - 1``, ``center =
   (maximum + 1)//2`` and ``m = max(1, round(0.03 W))`` unacquired columns on each side.
   ``reconstruction_esc = |center_crop(ifft2c(kspace), (H, H))|`` is computed from the stored
   complex64 k-space, so every file is self-consistent like the real data.

Slabs
-----
The usable axial range (template slices whose brain area is at least 30 % of the largest; all
80 phantom slices) is cut, inferior to superior, into three disjoint slabs: val (20 %),
train (60 %), test (20 %), separated by guard gaps of 3 slices. A subject's ``S`` slices are
consecutive slices of its split's slab with a random start; the indices are stored in the
``template_slices`` attribute.

Output
------
``DIR/singlecoil_{train,val,test}/synth_{split}_{i:04d}_{pd,pdfs}.h5`` (``acquisition`` attribute
``CORPD_FBK`` for the auxiliary PD-weighted volume, ``CORPDFS_FBK`` for the T2-weighted target;
``synthetic_contrast`` says ``PD`` / ``T2``), MINet-style pairing files
``DIR/singlecoil_{split}_split_less.csv`` (no header; rows ``pd_file,pdfs_file,score`` with the
Pearson correlation of the two ``reconstruction_esc`` volumes as score) and ``DIR/synth.json``
with every parameter. Every file is written to ``name.tmp`` and renamed with ``os.replace``.

Determinism: subject ``i`` of split ``s`` draws from ``SeedSequence([seed, split_id, i])``,
so the arrays depend only on (seed, split, index, sizes, source, noise), never on the other
counts, and the same call reproduces byte-identical files.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping

import h5py
import numpy as np
from scipy import ndimage

from cmfnet.io import write_text_atomic
from cmfnet.kspace import center_crop, fft2c, ifft2c
from cmfnet.ownership import claim_folder

__all__ = [
    "SIGNAL_SCALE",
    "TISSUES",
    "SEQUENCES",
    "SPLITS",
    "ISMRMRD_NAMESPACE",
    "generate_dataset",
    "generate_pair",
    "split_slabs",
    "build_ismrmrd_header",
    "write_fastmri_volume",
    "mni_template_dir",
    "column_limits",
]

FORMAT_VERSION = 1
SIGNAL_SCALE = 1e-4
ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"
SPLITS = ("train", "val", "test")
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}
SOURCES = ("mni", "phantom")

#: Tissue parameters at 3 T: T1 and T2 in ms, PD relative to water (see module docstring).
TISSUES: dict[str, dict[str, float]] = {
    "wm": {"T1": 832.0, "T2": 80.0, "PD": 0.69},
    "gm": {"T1": 1331.0, "T2": 110.0, "PD": 0.80},
    "csf": {"T1": 4200.0, "T2": 1800.0, "PD": 1.00},
    "fat": {"T1": 371.0, "T2": 133.0, "PD": 0.90},
    "lesion": {"T1": 1700.0, "T2": 180.0, "PD": 0.85},
}

#: Dual-echo turbo spin echo at 3 T. "aux" -> CORPD_FBK file, "target" -> CORPDFS_FBK file.
SEQUENCES: dict[str, dict[str, object]] = {
    "aux": {"contrast": "PD", "acquisition": "CORPD_FBK", "suffix": "pd", "TR": 4000.0, "TE": 12.0},
    "target": {
        "contrast": "T2",
        "acquisition": "CORPDFS_FBK",
        "suffix": "pdfs",
        "TR": 4000.0,
        "TE": 100.0,
    },
}

FIELD_STRENGTH_T = 3.0
GYROMAGNETIC_HZ_PER_T = 42.577478e6

# Per-subject variability (fractions of the FOV side unless stated).
_JITTER_SD = 0.03  # relative tissue-parameter jitter
_ROT_MAX_DEG = 5.0
_SCALE_SD = 0.03
_ANISO_SD = 0.02
_SHIFT_SD = 0.015
_ELASTIC_SD = 0.012
_ELASTIC_CTRL = 6  # in-plane control points per axis
_ELASTIC_Z_SPACING = 16  # slices per control point along z
_BIAS_AMPLITUDE = 0.15
_SLAB_FRACTIONS = {"val": 0.2, "train": 0.6, "test": 0.2}
_SLAB_GAP = 3
_MIN_AREA_FRACTION = 0.3
_EDGE_FRACTION = 0.03  # unacquired phase-encode columns per side (fraction of W)

_MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


# --------------------------------------------------------------------------------------------
# Anatomy sources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Anatomy:
    """A source of tissue-fraction slices.

    ``render(z_indices, ys, xs, pixel)`` returns (n_tissues, S, H, W) float64 fractions, where
    ``ys``/``xs`` (S, H, W) are source coordinates and ``pixel`` the pixel size in source units.
    Image rows move along ``row_sign`` * source-y and columns along ``col_sign`` * source-x.
    """

    name: str
    tissues: tuple[str, ...]
    n_slices: int
    usable: tuple[int, int]
    center: tuple[float, float]  # (y, x) in source units
    side: float  # FOV side in source units
    mm_per_unit: float
    thickness_mm: float
    row_sign: float
    col_sign: float
    render: Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]
    description: str

    @property
    def fov_mm(self) -> float:
        return round(self.side * self.mm_per_unit, 6)


def mni_template_dir() -> Path:
    """Folder of the MNI ICBM152 2009 templates bundled in nilearn's wheel
    (nilearn not imported)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("source='mni' needs the nilearn package (its bundled MNI templates)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    missing = [name for name in _MNI_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"source='mni': bundled templates missing in {folder}: {missing}")
    return folder


@lru_cache(maxsize=1)
def _mni_anatomy() -> _Anatomy:
    import nibabel as nib

    folder = mni_template_dir()
    # (z, x, y) contiguous so that one axial slice is one contiguous block
    vol = {
        key: np.ascontiguousarray(
            np.asarray(nib.load(str(folder / name)).dataobj).transpose(2, 0, 1)
        )
        for key, name in _MNI_FILES.items()
    }
    support = vol["t1"] > 0
    area = support.sum(axis=(1, 2))
    z_ok = np.nonzero(area >= _MIN_AREA_FRACTION * area.max())[0]
    usable = (int(z_ok[0]), int(z_ok[-1]) + 1)
    xs = np.nonzero(support.any(axis=(0, 2)))[0]
    ys = np.nonzero(support.any(axis=(0, 1)))[0]
    center = ((ys[0] + ys[-1]) / 2.0, (xs[0] + xs[-1]) / 2.0)

    # tissue maps only for the usable slab (+ a margin for the z smoothing of the support)
    z0, z1 = max(usable[0] - 3, 0), min(usable[1] + 3, support.shape[0])
    gm = vol["gm"][z0:z1].astype(np.float32) / 255.0
    wm = vol["wm"][z0:z1].astype(np.float32) / 255.0
    soft = ndimage.gaussian_filter(support[z0:z1].astype(np.float32), 0.6)
    total = np.clip(np.maximum(soft, gm + wm), 0.0, 1.0)
    maps = np.empty((3,) + gm.shape, dtype=np.float32)
    maps[0], maps[1] = gm, wm
    np.clip(total - gm - wm, 0.0, 1.0, out=maps[2])
    maps.setflags(write=False)

    def render(z_indices: np.ndarray, yy: np.ndarray, xx: np.ndarray, pixel: float) -> np.ndarray:
        sigma = 0.5 * math.sqrt(max(pixel * pixel - 1.0, 0.0))
        out = np.empty((3,) + yy.shape, dtype=np.float64)
        for s, z in enumerate(z_indices):
            coords = np.stack([xx[s], yy[s]])  # slice arrays are indexed (x, y)
            for t in range(3):
                sl = maps[t, int(z) - z0].astype(np.float64)
                if sigma > 0:
                    sl = ndimage.gaussian_filter(sl, sigma)
                out[t, s] = ndimage.map_coordinates(sl, coords, order=3, mode="constant", cval=0.0)
        return np.clip(out, 0.0, 1.0)

    return _Anatomy(
        name="mni152_2009",
        tissues=("gm", "wm", "csf"),
        n_slices=int(support.shape[0]),
        usable=usable,
        center=(float(center[0]), float(center[1])),
        side=220.0,
        mm_per_unit=1.0,
        thickness_mm=1.0,
        row_sign=-1.0,  # rows: anterior (large y) at the top
        col_sign=-1.0,  # columns: patient right (large x) on the left (radiological)
        render=render,
        description="MNI ICBM152 2009 nlin sym 09a GM/WM/CSF maps (nilearn bundled files)",
    )


# Modified Shepp-Logan geometry (x0, y0, a, b, angle_deg) + (z0, c) ellipsoid extent + tissue.
_PHANTOM_ELLIPSES = (
    (0.0, 0.0, 0.69, 0.92, 0.0, 0.0, 1.00, "fat"),
    (0.0, -0.0184, 0.6624, 0.874, 0.0, 0.0, 0.98, "wm"),
    (0.22, 0.0, 0.11, 0.31, -18.0, 0.05, 0.55, "csf"),
    (-0.22, 0.0, 0.16, 0.41, 18.0, 0.05, 0.60, "csf"),
    (0.0, 0.35, 0.21, 0.25, 0.0, 0.10, 0.55, "gm"),
    (0.0, 0.1, 0.046, 0.046, 0.0, 0.0, 0.35, "lesion"),
    (0.0, -0.1, 0.046, 0.046, 0.0, -0.05, 0.35, "lesion"),
    (-0.08, -0.605, 0.046, 0.023, 0.0, -0.1, 0.40, "gm"),
    (0.0, -0.605, 0.023, 0.023, 0.0, -0.1, 0.40, "gm"),
    (0.06, -0.605, 0.023, 0.046, 0.0, -0.1, 0.40, "gm"),
)
_PHANTOM_TISSUES = ("fat", "wm", "csf", "gm", "lesion")
_PHANTOM_NZ = 80
_PHANTOM_Z = np.linspace(-0.7, 0.7, _PHANTOM_NZ)
_PHANTOM_SUB = 3


@lru_cache(maxsize=1)
def _phantom_anatomy() -> _Anatomy:
    tissue_index = {name: i for i, name in enumerate(_PHANTOM_TISSUES)}

    def render(z_indices: np.ndarray, yy: np.ndarray, xx: np.ndarray, pixel: float) -> np.ndarray:
        n_t = len(_PHANTOM_TISSUES)
        out = np.zeros((n_t,) + yy.shape, dtype=np.float64)
        offsets = (np.arange(_PHANTOM_SUB) + 0.5) / _PHANTOM_SUB - 0.5
        for s, zi in enumerate(z_indices):
            z = _PHANTOM_Z[int(zi)]
            for dy in offsets:
                for dx in offsets:
                    y = yy[s] + dy * pixel
                    x = xx[s] + dx * pixel
                    label = np.full(y.shape, -1, dtype=np.int64)
                    for x0, y0, a, b, ang, z0, c, tissue in _PHANTOM_ELLIPSES:
                        rz = 1.0 - ((z - z0) / c) ** 2
                        if rz <= 0:
                            continue
                        r = math.sqrt(rz)
                        th = math.radians(ang)
                        u = (x - x0) * math.cos(th) + (y - y0) * math.sin(th)
                        v = -(x - x0) * math.sin(th) + (y - y0) * math.cos(th)
                        inside = (u / (a * r)) ** 2 + (v / (b * r)) ** 2 <= 1.0
                        label[inside] = tissue_index[tissue]
                    for t in range(n_t):
                        out[t, s] += label == t
        return out / (_PHANTOM_SUB * _PHANTOM_SUB)

    return _Anatomy(
        name="phantom",
        tissues=_PHANTOM_TISSUES,
        n_slices=_PHANTOM_NZ,
        usable=(0, _PHANTOM_NZ),
        center=(0.0, 0.0),
        side=2.2,
        mm_per_unit=100.0,
        thickness_mm=2.0,
        row_sign=-1.0,
        col_sign=1.0,
        render=render,
        description="modified Shepp-Logan ellipsoid phantom with per-ellipse tissues",
    )


def _anatomy(source: str) -> _Anatomy:
    if source == "mni":
        return _mni_anatomy()
    if source == "phantom":
        return _phantom_anatomy()
    raise ValueError(f"source must be one of {SOURCES} (got {source!r})")


def split_slabs(usable: tuple[int, int], gap: int = _SLAB_GAP) -> dict[str, tuple[int, int]]:
    """Disjoint [lo, hi) slabs of slice indices, inferior to superior: val, train, test."""
    lo, hi = usable
    n = hi - lo - 2 * gap
    if n < 5:
        raise ValueError(f"usable slice range {usable} too small to split into three slabs")
    n_val = round(n * _SLAB_FRACTIONS["val"])
    n_test = round(n * _SLAB_FRACTIONS["test"])
    n_train = n - n_val - n_test
    val = (lo, lo + n_val)
    train = (val[1] + gap, val[1] + gap + n_train)
    test = (train[1] + gap, hi)
    return {"train": train, "val": val, "test": test}


# --------------------------------------------------------------------------------------------
# Random smooth fields
# --------------------------------------------------------------------------------------------


def _smooth_field(
    rng: np.random.Generator, out_shape: tuple[int, int, int], ctrl: tuple[int, int, int]
) -> np.ndarray:
    """Cubic-spline interpolation of clipped standard-normal control values: (S, H, W) float64.

    The control grid spans the output grid end to end. Tensor-product spline interpolation is
    separable, so it is applied as one (n_out x n_ctrl) weight matrix per axis.
    """
    coarse = np.clip(rng.standard_normal(ctrl), -2.5, 2.5)
    weights = []
    for c, n in zip(ctrl, out_shape):
        pos = np.linspace(0.0, c - 1.0, n)[None, :]
        eye = np.eye(c)
        weights.append(
            np.stack(
                [ndimage.map_coordinates(eye[k], pos, order=3, mode="nearest") for k in range(c)],
                axis=1,
            )
        )
    return np.einsum("zc,yd,xe,cde->zyx", weights[0], weights[1], weights[2], coarse, optimize=True)


def _poly2(coef: np.ndarray, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """coef[0] + coef[1] u + coef[2] v + coef[3] u^2 + coef[4] u v + coef[5] v^2."""
    return coef[0] + coef[1] * u + coef[2] * v + coef[3] * u * u + coef[4] * u * v + coef[5] * v * v


def _clipped_normal(rng: np.random.Generator, size=None, limit: float = 2.0):
    return np.clip(rng.standard_normal(size), -limit, limit)


def column_limits(width: int) -> tuple[int, int, int, int]:
    """(maximum, center, padding_left, padding_right) of the acquired phase-encode columns."""
    margin = max(1, int(round(_EDGE_FRACTION * width)))
    n_acq = width - 2 * margin
    maximum = n_acq - 1
    center = n_acq // 2
    padding_left = width // 2 - center
    padding_right = padding_left + maximum + 1
    return maximum, center, padding_left, padding_right


# --------------------------------------------------------------------------------------------
# One subject
# --------------------------------------------------------------------------------------------


def _signal(tissue: Mapping[str, float], tr: float, te: float) -> float:
    return tissue["PD"] * (1.0 - math.exp(-tr / tissue["T1"])) * math.exp(-te / tissue["T2"])


def generate_pair(
    source: str,
    split: str,
    index: int,
    *,
    slices: int,
    hr_size: int,
    width: int,
    seed: int,
    noise: float,
) -> dict:
    """Simulate one co-registered subject; returns k-spaces and metadata (nothing written).

    Returns a dict with ``kspace`` {"aux", "target"} (complex64, (slices, 2H, width), unacquired
    columns zeroed), ``template_slices`` (int64 z indices), ``tissue_params`` (jittered),
    ``noise_sigma`` (k-space sd per real/imag part), ``anatomy`` (the source description).
    """
    anat = _anatomy(source)
    slab = split_slabs(anat.usable)[split]
    if slices > slab[1] - slab[0]:
        raise ValueError(
            f"slices={slices} exceeds the {split} slab of the {source} source "
            f"({slab[1] - slab[0]} slices)"
        )
    h, w = hr_size, width
    ss = np.random.SeedSequence([int(seed), _SPLIT_ID[split], int(index)])
    ss_anat, ss_aux, ss_target = ss.spawn(3)
    rng = np.random.default_rng(ss_anat)

    # --- geometry: slices, affine, elastic warp
    start = int(rng.integers(slab[0], slab[1] - slices + 1))
    z_idx = np.arange(start, start + slices, dtype=np.int64)
    theta = math.radians(rng.uniform(-_ROT_MAX_DEG, _ROT_MAX_DEG))
    scale = math.exp(_SCALE_SD * float(_clipped_normal(rng)))
    aniso = math.exp(_ANISO_SD * float(_clipped_normal(rng)))
    shift = _SHIFT_SD * anat.side * _clipped_normal(rng, 2)
    n_zc = max(2, math.ceil(slices / _ELASTIC_Z_SPACING) + 1)
    ctrl = (n_zc, _ELASTIC_CTRL, _ELASTIC_CTRL)
    disp_r = _ELASTIC_SD * anat.side * _smooth_field(rng, (slices, h, h), ctrl)
    disp_c = _ELASTIC_SD * anat.side * _smooth_field(rng, (slices, h, h), ctrl)

    pixel = anat.side / h
    grid = (np.arange(h) + 0.5) / h - 0.5  # [-0.5, 0.5)
    gr = grid[None, :, None] * anat.side  # row offsets (source units)
    gc = grid[None, None, :] * anat.side  # column offsets
    sr, sc = scale * aniso, scale / aniso
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    rows = sr * (cos_t * gr - sin_t * gc) + shift[0] + disp_r
    cols = sc * (sin_t * gr + cos_t * gc) + shift[1] + disp_c
    yy = anat.center[0] + anat.row_sign * rows
    xx = anat.center[1] + anat.col_sign * cols
    yy, xx = np.broadcast_to(yy, (slices, h, h)), np.broadcast_to(xx, (slices, h, h))
    fractions = anat.render(z_idx, yy, xx, pixel * scale)  # (T, S, H, H)

    # --- tissue parameters with per-subject jitter (shared by both echoes)
    params = {}
    for name in anat.tissues:
        jit = 1.0 + _JITTER_SD * _clipped_normal(rng, 3)
        base = TISSUES[name]
        params[name] = {
            "T1": base["T1"] * jit[0],
            "T2": base["T2"] * jit[1],
            "PD": base["PD"] * jit[2],
        }

    # --- receive-field magnitude and smooth phases
    u = 2.0 * grid[None, None, :]  # [-1, 1) columns
    v = 2.0 * grid[None, :, None]  # rows
    zc = np.linspace(-1.0, 1.0, slices)[:, None, None] if slices > 1 else np.zeros((1, 1, 1))
    bias_coef = _clipped_normal(rng, 6) * np.array([0.0, 0.5, 0.5, 0.3, 0.3, 0.3])
    bias = _poly2(bias_coef, v, u)
    bias = 1.0 + _BIAS_AMPLITUDE * bias / max(float(np.abs(bias).max()), 1e-12) * 0.9
    phase_coef = np.concatenate([[rng.uniform(-math.pi, math.pi)], 0.5 * _clipped_normal(rng, 5)])
    phase_z = 0.3 * float(_clipped_normal(rng))
    shared_phase = _poly2(phase_coef, v, u) + phase_z * zc

    maximum, center, pad_l, pad_r = column_limits(w)
    top, left = (2 * h - h) // 2, (w - h) // 2
    brain = fractions.sum(axis=0) > 0.5
    magnitudes = {}
    for role in ("aux", "target"):
        seq = SEQUENCES[role]
        sig = np.zeros((slices, h, h))
        for t, name in enumerate(anat.tissues):
            sig += fractions[t] * _signal(params[name], seq["TR"], seq["TE"])
        magnitudes[role] = SIGNAL_SCALE * sig * bias
    ref = float(magnitudes["aux"][brain].mean()) if brain.any() else SIGNAL_SCALE
    sigma = noise * ref

    kspaces = {}
    for role, ss_noise in (("aux", ss_aux), ("target", ss_target)):
        nrng = np.random.default_rng(ss_noise)
        own_phase = _poly2(0.2 * _clipped_normal(nrng, 6), v, u)
        image = magnitudes[role] * np.exp(1j * (shared_phase + own_phase))
        field = np.zeros((slices, 2 * h, w), dtype=np.complex128)
        field[:, top : top + h, left : left + h] = image
        k = fft2c(field)
        if sigma > 0:
            k = k + sigma * (nrng.standard_normal(k.shape) + 1j * nrng.standard_normal(k.shape))
        k[..., :pad_l] = 0
        k[..., pad_r:] = 0
        kspaces[role] = k.astype(np.complex64)

    return {
        "kspace": kspaces,
        "template_slices": z_idx,
        "tissue_params": params,
        "noise_sigma": float(sigma),
        "anatomy": anat,
        "fractions": fractions.astype(np.float32),
        "encoding_limits": {"maximum": maximum, "center": center},
    }


# --------------------------------------------------------------------------------------------
# ISMRMRD header and HDF5 writer
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Data set
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer (got {value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (got {value})")
    return int(value)


def _validate(out_dir, n_train, n_val, n_test, slices, hr_size, width, seed, source, noise):
    counts = {
        "train": _check_int("n_train", n_train, 0),
        "val": _check_int("n_val", n_val, 0),
        "test": _check_int("n_test", n_test, 0),
    }
    slices = _check_int("slices", slices, 1)
    hr_size = _check_int("hr_size", hr_size, 8)
    width = _check_int("width", width, 1)
    if not hr_size <= width <= 4 * hr_size:
        raise ValueError(
            f"width must be between hr_size and 4*hr_size ({hr_size}..{4 * hr_size}) "
            f"so the {hr_size}x{hr_size} reconstruction crop exists (got {width})"
        )
    seed = _check_int("seed", seed, 0)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES} (got {source!r})")
    try:
        noise = float(noise)
    except (TypeError, ValueError):
        raise ValueError(f"noise must be a number >= 0 (got {noise!r})") from None
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0 (got {noise})")
    return counts, slices, hr_size, width, seed, noise


def _prepare_out_dir(out_dir) -> Path:
    """``out_dir`` claimed for a synthetic data set: new, empty, or one that cmfnet wrote before
    (never a folder holding other files, which could be overwritten or mixed in)."""
    return claim_folder(Path(out_dir), "synthetic", setting="out_dir")


def _volume_score(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (normalized cross-correlation) of two volumes."""
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else 0.0


def generate_dataset(
    out_dir: str | os.PathLike,
    n_train: int = 2,
    n_val: int = 1,
    n_test: int = 1,
    slices: int = 4,
    hr_size: int = 32,
    width: int = 36,
    seed: int = 0,
    source: str = "phantom",
    noise: float = 0.02,
    progress: bool = True,
) -> Path:
    """Write a paired synthetic data set in fastMRI single-coil layout; returns ``Path(out_dir)``.

    The defaults make a tiny phantom data set for tests (well under a second).
    Raises ValueError naming the setting for impossible settings or an unwritable ``out_dir``.
    """
    counts, slices, hr_size, width, seed, noise = _validate(
        out_dir, n_train, n_val, n_test, slices, hr_size, width, seed, source, noise
    )
    anat = _anatomy(source)
    slabs = split_slabs(anat.usable)
    for split in SPLITS:
        size = slabs[split][1] - slabs[split][0]
        if counts[split] > 0 and slices > size:
            raise ValueError(
                f"slices={slices} exceeds the {split} slab of the {source} source "
                f"({size} slices; at most {min(b - a for a, b in slabs.values())} "
                f"fit every split)"
            )
    out = _prepare_out_dir(out_dir)

    from tqdm.auto import tqdm

    maximum, center, pad_l, pad_r = column_limits(width)
    total = sum(counts.values())
    listing: dict[str, list[list]] = {}
    with tqdm(total=total, desc="synth", unit="pair", disable=not progress) as bar:
        for split in SPLITS:
            folder = out / f"singlecoil_{split}"
            folder.mkdir(exist_ok=True)
            rows = []
            for i in range(counts[split]):
                pair = generate_pair(
                    source,
                    split,
                    i,
                    slices=slices,
                    hr_size=hr_size,
                    width=width,
                    seed=seed,
                    noise=noise,
                )
                subject = f"synth_{split}_{i:04d}"
                recons = {}
                names = {}
                for role in ("aux", "target"):
                    seq = SEQUENCES[role]
                    name = f"{subject}_{seq['suffix']}.h5"
                    header = build_ismrmrd_header(
                        hr_size=hr_size,
                        width=width,
                        slices=slices,
                        fov_mm=anat.fov_mm,
                        thickness_mm=anat.thickness_mm,
                        maximum=maximum,
                        center=center,
                        tr_ms=seq["TR"],
                        te_ms=seq["TE"],
                        protocol=seq["acquisition"],
                        patient_id=subject,
                        description=f"synthetic {seq['contrast']}-weighted ({anat.name})",
                        user_strings={"cmfnet_synthetic_contrast": seq["contrast"]},
                    )
                    attrs = {
                        "acquisition": seq["acquisition"],
                        "synthetic_contrast": seq["contrast"],
                        "patient_id": subject,
                        "split": split,
                        "synthetic_source": anat.name,
                        "template_slices": pair["template_slices"],
                        "TR_ms": float(seq["TR"]),
                        "TE_ms": float(seq["TE"]),
                        "noise_sigma": pair["noise_sigma"],
                        "seed": seed,
                        "generator": f"cmfnet.data.synth v{FORMAT_VERSION}",
                    }
                    path = write_fastmri_volume(
                        folder / name, pair["kspace"][role], header, (hr_size, hr_size), attrs
                    )
                    with h5py.File(path, "r") as hf:
                        recons[role] = hf["reconstruction_esc"][()]
                    names[role] = name
                score = _volume_score(recons["aux"], recons["target"])
                rows.append([names["aux"], names["target"], round(score, 4)])
                bar.update(1)
            csv = "".join(f"{a},{b},{s:.4f}\n" for a, b, s in rows)
            write_text_atomic(out / f"singlecoil_{split}_split_less.csv", csv)
            listing[split] = rows

    meta = {
        "generator": "cmfnet.data.synth",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "source": source,
        "anatomy": anat.description,
        "counts": counts,
        "slices": slices,
        "hr_size": hr_size,
        "width": width,
        "noise": noise,
        "noise_reference": "sd per real/imag part = noise * mean |PD image| over the brain",
        "signal_scale": SIGNAL_SCALE,
        "fov_mm": anat.fov_mm,
        "slice_thickness_mm": anat.thickness_mm,
        "field_strength_T": FIELD_STRENGTH_T,
        "kspace_shape": [slices, 2 * hr_size, width],
        "encoding_limits_step_1": {"minimum": 0, "maximum": maximum, "center": center},
        "padding_left": pad_l,
        "padding_right": pad_r,
        "sequences": {role: dict(seq) for role, seq in SEQUENCES.items()},
        "tissues": {name: TISSUES[name] for name in anat.tissues},
        "tissue_jitter_sd": _JITTER_SD,
        "slabs": {split: list(slabs[split]) for split in SPLITS},
        "files": listing,
    }
    write_text_atomic(out / "synth.json", json.dumps(meta, indent=2) + "\n")
    return out
