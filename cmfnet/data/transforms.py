"""Per-sample transform: draw a mask, undersample, normalise, and build the batch item."""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch

from cmfnet.mri.degrade import LowResPair, undersample
from cmfnet.mri.masks import seed_from_name

#: inputs are clamped to [-INPUT_CLAMP, INPUT_CLAMP] once normalised (fastMRI's value), unless
#: the run sets ``data.clamp``
INPUT_CLAMP = 6.0


class JointSample(NamedTuple):
    """One training item for joint reconstruction + super-resolution.

    Image tensors are normalised with the statistics of ``target_input`` (``mean``, ``std``);
    the auxiliary input is normalised with its own. Undo with ``x * std + mean``.

    Attributes:
        target_input: (1, h, w) undersampled LR target, normalised and clamped (model input).
        aux_input: (1, h, w) fully sampled LR auxiliary, normalised and clamped (model input).
        rec_target: (1, h, w) fully sampled LR target, normalised (reconstruction target).
        sr_target: (1, H, W) HR target, normalised (super-resolution target).
        mask: (w,) the column mask applied to the LR k-space.
        mean: () mean of the zero-filled target input before normalisation.
        std: () std of the zero-filled target input before normalisation.
        sr_max: () maximum of the HR target over the whole volume, in raw (de-normalised) units:
            fastMRI's data range for the SR scores, known before the volume is scored; 0 where
            the dataset did not compute it (training; see :class:`VolumeMax`).
        rec_max: () the same for the fully sampled LR target (the rec scores).
        fname: file name of the target volume.
        slice_idx: slice index within the volume.
    """

    target_input: torch.Tensor
    aux_input: torch.Tensor
    rec_target: torch.Tensor
    sr_target: torch.Tensor
    mask: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    sr_max: torch.Tensor
    rec_max: torch.Tensor
    fname: str
    slice_idx: int


class VolumeMax(NamedTuple):
    """A volume's maxima of the SR target (``target_hr``) and the rec target (``rec_target``) in
    raw units: the data ranges of its SSIM, which the streaming metrics need before all its
    slices are scored (:meth:`~cmfnet.data.paired.PairedSliceDataset.compute_volume_maxima`)."""

    sr: float
    rec: float


#: what samples carry when their volume's maxima were not computed (training needs none)
UNKNOWN_MAX = VolumeMax(0.0, 0.0)


def normalize_instance(data: np.ndarray, eps: float = 1e-11) -> tuple[np.ndarray, float, float]:
    """(data - mean) / (std + eps) with the data's own statistics -> (normalised, mean, std).
    The std is the sample std (``ddof=1``), as fastMRI's ``normalize_instance`` (``torch.std``)."""
    mean = float(data.mean())
    std = float(data.std(ddof=1))
    return (data - mean) / (std + eps), mean, std


class JointRecSRTransform:
    """Callable turning a :class:`LowResPair` into a :class:`JointSample`.

    Args:
        mask_func: a mask function from :mod:`cmfnet.mri.masks`.
        seed_masks_by_name: seed each mask by the volume's file name (validation and test), so
            every machine sees the same masks; otherwise draw a fresh mask per sample (training).
        clamp: inputs are clamped to [-clamp, clamp] after normalisation
            (None: :data:`INPUT_CLAMP`).
        eps: added to the std when normalising.
    """

    def __init__(
        self, mask_func, seed_masks_by_name: bool, clamp: Optional[float] = None, eps: float = 1e-11
    ):
        clamp = INPUT_CLAMP if clamp is None else clamp
        if clamp <= 0:
            raise ValueError(f"data.clamp must be > 0, got {clamp}")
        self.mask_func = mask_func
        self.seed_masks_by_name = seed_masks_by_name
        self.clamp = clamp
        self.eps = eps

    def set_stream(self, seed: int, epoch: int, worker: int) -> None:
        """Restart the training mask stream at (seed, epoch, worker): reproducible across
        resumes and distinct per DataLoader worker. Frozen masks have no stream."""
        rng: Optional[np.random.RandomState] = getattr(self.mask_func, "rng", None)
        if rng is not None:
            rng.seed([seed % 2**32, epoch, worker])

    def __call__(
        self,
        pair: LowResPair,
        fname: str,
        slice_idx: int,
        volume_max: Optional[VolumeMax] = None,
    ) -> JointSample:
        """The sample of one slice; ``volume_max`` (None: :data:`UNKNOWN_MAX`) is its volume's."""
        volume_max = UNKNOWN_MAX if volume_max is None else volume_max
        kspace = pair.target_kspace_lr
        seed = seed_from_name(fname) if self.seed_masks_by_name else None
        mask, _ = self.mask_func((1,) + kspace.shape + (2,), seed=seed)
        columns = mask.reshape(-1).numpy()
        zero_filled = undersample(kspace, columns)
        target_input, mean, std = normalize_instance(zero_filled, self.eps)
        aux_input, _, _ = normalize_instance(pair.aux_lr, self.eps)
        scale = std + self.eps

        def as_tensor(image: np.ndarray, clamp: bool) -> torch.Tensor:
            tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
            return tensor.clamp(-self.clamp, self.clamp) if clamp else tensor

        return JointSample(
            target_input=as_tensor(target_input, clamp=True),
            aux_input=as_tensor(aux_input, clamp=True),
            rec_target=as_tensor((pair.rec_target - mean) / scale, clamp=False),
            sr_target=as_tensor((pair.target_hr - mean) / scale, clamp=False),
            mask=torch.from_numpy(columns.astype(np.float32)),
            mean=torch.tensor(mean, dtype=torch.float32),
            std=torch.tensor(scale, dtype=torch.float32),
            sr_max=torch.tensor(volume_max.sr, dtype=torch.float32),
            rec_max=torch.tensor(volume_max.rec, dtype=torch.float32),
            fname=fname,
            slice_idx=int(slice_idx),
        )
