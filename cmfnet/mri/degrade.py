"""Degradation of a fully sampled HR slice pair into the joint reconstruction + SR task.

For one slice of each contrast (DATA.md):

1. ``image_hr`` is the complex HR image (for fastMRI: the centre crop of ``ifft2c(kspace)``
   to the reconstruction size).
2. ``k_lr = center_crop(fft2c(image_hr), HR / scale) / scale``: low-pass truncation of k-space.
3. The auxiliary input and the reconstruction target are ``|ifft2c(k_lr)|``; the target input is
   ``|ifft2c(k_lr * mask)|`` with a column mask drawn on the LR k-space.

Intensity convention: with orthonormal FFTs, truncating k-space to 1/scale of each side makes
LR magnitudes ``scale`` times brighter than HR ones. We divide ``k_lr`` by ``scale`` so an LR
image is the low-pass version of the HR image *in the same intensity units*; the rec and SR
targets are then on one scale and one set of normalisation statistics serves both. (The
CMF-Net release does not compensate; metrics are computed on de-normalised outputs against
untouched targets, so the choice does not change what is measured.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmfnet.mri.kspace import center_crop, complex_abs, fft2c, ifft2c


@dataclass(frozen=True)
class LowResPair:
    """The deterministic part of one degraded slice pair (cacheable; masks are drawn later).

    Magnitudes are in the data's units; :class:`~cmfnet.data.transforms.JointRecSRTransform`
    normalises them into the batch fields of the same role (``rec_target``, ``aux_input``, ...).

    Attributes:
        target_kspace_lr: complex64 (h, w), centred LR k-space of the target contrast.
        rec_target: float32 (h, w), fully sampled LR target magnitude (reconstruction target).
        aux_lr: float32 (h, w), fully sampled LR auxiliary magnitude (guide input).
        target_hr: float32 (H, W), HR target magnitude (super-resolution target).
    """

    target_kspace_lr: np.ndarray
    rec_target: np.ndarray
    aux_lr: np.ndarray
    target_hr: np.ndarray


def lowres_shape(hr_shape: tuple[int, int], scale: int) -> tuple[int, int]:
    """LR size for an HR size; raises ValueError when ``scale`` does not divide it."""
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    h, w = hr_shape
    if h % scale or w % scale:
        raise ValueError(f"scale={scale} does not divide the HR size {h}x{w}")
    return h // scale, w // scale


def lowres_kspace(image_hr: np.ndarray, scale: int) -> np.ndarray:
    """Centred LR k-space of a complex HR image: (H, W) -> (H/scale, W/scale) complex64."""
    k_hr = fft2c(image_hr.astype(np.complex64))
    return (center_crop(k_hr, lowres_shape(image_hr.shape[-2:], scale)) / scale).astype(
        np.complex64
    )


def magnitude_image(kspace: np.ndarray) -> np.ndarray:
    """|ifft2c(kspace)| as float32: (h, w) complex -> (h, w) real."""
    return complex_abs(ifft2c(kspace)).astype(np.float32)


def undersample(kspace: np.ndarray, column_mask: np.ndarray) -> np.ndarray:
    """Zero-filled magnitude of column-undersampled k-space: (h, w), (w,) -> (h, w) float32."""
    if column_mask.shape != (kspace.shape[-1],):
        raise ValueError(
            f"mask has shape {column_mask.shape}, expected ({kspace.shape[-1]},) "
            f"for k-space {kspace.shape}"
        )
    return magnitude_image(kspace * column_mask[None, :])


def degrade_slice(
    target_image_hr: np.ndarray,
    aux_image_hr: np.ndarray,
    scale: int,
    target_hr: np.ndarray | None = None,
) -> LowResPair:
    """Degrade one co-registered HR slice pair (complex (H, W) each) for joint rec + SR.

    ``target_hr`` overrides the HR magnitude target (fastMRI's ``reconstruction_esc``);
    by default it is ``|target_image_hr|``.
    """
    if target_image_hr.shape != aux_image_hr.shape:
        raise ValueError(
            f"target {target_image_hr.shape} and auxiliary {aux_image_hr.shape} "
            "slices differ in shape"
        )
    k_target = lowres_kspace(target_image_hr, scale)
    k_aux = lowres_kspace(aux_image_hr, scale)
    hr = complex_abs(target_image_hr) if target_hr is None else target_hr
    return LowResPair(
        target_kspace_lr=k_target,
        rec_target=magnitude_image(k_target),
        aux_lr=magnitude_image(k_aux),
        target_hr=np.asarray(hr, dtype=np.float32),
    )


def degrade_magnitude_slice(target_hr: np.ndarray, aux_hr: np.ndarray, scale: int) -> LowResPair:
    """:func:`degrade_slice` of a magnitude-only pair (NIfTI data sets: ISLES, IXI), each
    (H, W) real: the magnitudes are the HR images (zero phase) and the target's own magnitude
    is the HR target."""
    return degrade_slice(
        target_hr.astype(np.complex64), aux_hr.astype(np.complex64), scale, target_hr=target_hr
    )
