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

import json
import math
import os
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from cmfnet.data.synth_anatomy import (
    SOURCES,
    anatomy,
    clipped_normal,
    column_limits,
    poly2,
    smooth_field,
    split_slabs,
)
from cmfnet.data.synth_files import FIELD_STRENGTH_T, build_ismrmrd_header, write_fastmri_volume
from cmfnet.mri.kspace import fft2c
from cmfnet.runs.io import write_text_atomic
from cmfnet.runs.ownership import claim_folder

__all__ = [
    "SIGNAL_SCALE",
    "TISSUES",
    "SEQUENCES",
    "SPLITS",
    "generate_dataset",
    "generate_pair",
]


FORMAT_VERSION = 1


SIGNAL_SCALE = 1e-4


SPLITS = ("train", "val", "test")


_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


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
    anat = anatomy(source)
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
    scale = math.exp(_SCALE_SD * float(clipped_normal(rng)))
    aniso = math.exp(_ANISO_SD * float(clipped_normal(rng)))
    shift = _SHIFT_SD * anat.side * clipped_normal(rng, 2)
    n_zc = max(2, math.ceil(slices / _ELASTIC_Z_SPACING) + 1)
    ctrl = (n_zc, _ELASTIC_CTRL, _ELASTIC_CTRL)
    disp_r = _ELASTIC_SD * anat.side * smooth_field(rng, (slices, h, h), ctrl)
    disp_c = _ELASTIC_SD * anat.side * smooth_field(rng, (slices, h, h), ctrl)

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
        jit = 1.0 + _JITTER_SD * clipped_normal(rng, 3)
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
    bias_coef = clipped_normal(rng, 6) * np.array([0.0, 0.5, 0.5, 0.3, 0.3, 0.3])
    bias = poly2(bias_coef, v, u)
    bias = 1.0 + _BIAS_AMPLITUDE * bias / max(float(np.abs(bias).max()), 1e-12) * 0.9
    phase_coef = np.concatenate([[rng.uniform(-math.pi, math.pi)], 0.5 * clipped_normal(rng, 5)])
    phase_z = 0.3 * float(clipped_normal(rng))
    shared_phase = poly2(phase_coef, v, u) + phase_z * zc

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
        own_phase = poly2(0.2 * clipped_normal(nrng, 6), v, u)
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
    anat = anatomy(source)
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
