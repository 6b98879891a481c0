"""The anatomy behind the synthetic data set: tissue label volumes from the MNI ICBM 2009c template
(nilearn) or a 3-D modified Shepp-Logan phantom, its train/val/test slabs, and the random smooth
fields that vary each subject.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

SOURCES = ("mni", "phantom")


_SLAB_FRACTIONS = {"val": 0.2, "train": 0.6, "test": 0.2}


_SLAB_GAP = 3


_MIN_AREA_FRACTION = 0.3


_EDGE_FRACTION = 0.03  # unacquired phase-encode columns per side (fraction of W)


_MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


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


def anatomy(source: str) -> _Anatomy:
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


def smooth_field(
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


def poly2(coef: np.ndarray, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """coef[0] + coef[1] u + coef[2] v + coef[3] u^2 + coef[4] u v + coef[5] v^2."""
    return coef[0] + coef[1] * u + coef[2] * v + coef[3] * u * u + coef[4] * u * v + coef[5] * v * v


def clipped_normal(rng: np.random.Generator, size=None, limit: float = 2.0):
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
