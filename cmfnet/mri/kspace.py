"""k-space physics: centred orthonormal FFTs, centre crops and magnitudes.

Conventions follow fastMRI: the two image axes are the last two axes, the centred FFT is
``fftshift(fft2(ifftshift(x), norm="ortho"))``, and crops take the central block with the
same rounding as ``fastmri.data.transforms.center_crop`` (start = (n - size) // 2).
Functions accept numpy arrays or torch tensors with a complex dtype where stated.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)

_AXES = (-2, -1)


def fft2c(image: Array) -> Array:
    """Centred orthonormal 2-D FFT over the last two axes: (..., H, W) complex -> (..., H, W)."""
    if isinstance(image, torch.Tensor):
        shifted = torch.fft.ifftshift(image, dim=_AXES)
        return torch.fft.fftshift(torch.fft.fft2(shifted, dim=_AXES, norm="ortho"), dim=_AXES)
    shifted = np.fft.ifftshift(image, axes=_AXES)
    return np.fft.fftshift(np.fft.fft2(shifted, axes=_AXES, norm="ortho"), axes=_AXES)


def ifft2c(kspace: Array) -> Array:
    """Centred orthonormal inverse 2-D FFT over the last two axes: (..., H, W) -> (..., H, W)."""
    if isinstance(kspace, torch.Tensor):
        shifted = torch.fft.ifftshift(kspace, dim=_AXES)
        return torch.fft.fftshift(torch.fft.ifft2(shifted, dim=_AXES, norm="ortho"), dim=_AXES)
    shifted = np.fft.ifftshift(kspace, axes=_AXES)
    return np.fft.fftshift(np.fft.ifft2(shifted, axes=_AXES, norm="ortho"), axes=_AXES)


def center_crop(data: Array, shape: Sequence[int]) -> Array:
    """Central (h, w) block of the last two axes: (..., H, W) -> (..., h, w).

    Used both for image crops and for the low-pass truncation of centred k-space.

    Raises ValueError when the crop is larger than the data.
    """
    h, w = int(shape[0]), int(shape[1])
    full_h, full_w = data.shape[-2], data.shape[-1]
    if not (0 < h <= full_h and 0 < w <= full_w):
        raise ValueError(f"cannot centre-crop ({full_h}, {full_w}) to ({h}, {w})")
    top = (full_h - h) // 2
    left = (full_w - w) // 2
    return data[..., top : top + h, left : left + w]


def complex_abs(data: Array) -> Array:
    """Magnitude of a complex array, returned as a real array of the matching precision."""
    if isinstance(data, torch.Tensor):
        return data.abs()
    return np.abs(data)
