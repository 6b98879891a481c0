"""Image-quality metrics with fastMRI's definitions (``fastmri/evaluate.py``).

Every metric takes a ground-truth and a prediction volume of shape ``(slices, H, W)`` and
returns a float. ``maxval=None`` means the ground-truth volume's maximum, the data range that
fastMRI uses for PSNR and SSIM. Results are aggregated per volume, then averaged over volumes.

The names of the scores (:data:`OUTPUTS` x :data:`METRICS`, :func:`score_key`) are defined here
once; importing this module is cheap (scikit-image is imported when a metric is computed), so
the command-line tools that only read ``metrics.json`` use them too.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Dict, Mapping, Optional

import numpy as np


def _check_volumes(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape:
        raise ValueError(
            f"metrics: ground truth {gt.shape} and prediction {pred.shape} differ in shape"
        )
    if gt.ndim != 3:
        raise ValueError(f"metrics: expected volumes (slices, H, W), got {gt.ndim} dimensions")
    if not np.isfinite(
        gt
    ).all():  # a non-finite prediction scores NaN: a diverged model, not bad data
        raise ValueError("metrics: the ground truth holds NaN or inf")
    if not gt.max() > 0:
        raise ValueError(
            "metrics: the ground truth has no positive value (all zeros?), "
            "so PSNR, SSIM and NMSE are undefined"
        )


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Normalised mean squared error ||gt - pred||^2 / ||gt||^2 over the whole volume."""
    _check_volumes(gt, pred)
    return float(np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2)


def psnr(gt: np.ndarray, pred: np.ndarray, maxval: Optional[float] = None) -> float:
    """Peak signal-to-noise ratio in dB with data range ``maxval`` (default: the volume max)."""
    from skimage.metrics import peak_signal_noise_ratio

    _check_volumes(gt, pred)
    maxval = gt.max() if maxval is None else maxval
    return float(peak_signal_noise_ratio(gt, pred, data_range=maxval))


def ssim(gt: np.ndarray, pred: np.ndarray, maxval: Optional[float] = None) -> float:
    """Structural similarity averaged over slices (7x7 uniform window), data range ``maxval``."""
    from skimage.metrics import structural_similarity

    _check_volumes(gt, pred)
    maxval = gt.max() if maxval is None else maxval
    total = sum(
        structural_similarity(gt[i], pred[i], data_range=maxval) for i in range(gt.shape[0])
    )
    return float(total / gt.shape[0])


#: every metric, in the order tables and ``metrics.json`` give them
METRIC_FUNCS: Dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "psnr": psnr,
    "ssim": ssim,
    "nmse": nmse,
}
METRICS = tuple(METRIC_FUNCS)
METRIC_LABELS = {"psnr": "PSNR", "ssim": "SSIM", "nmse": "NMSE"}
#: the network's outputs, each scored against its own target: super-resolved (the headline),
#: reconstructed
OUTPUTS = ("sr", "rec")


def score_key(output: str, metric: str) -> str:
    """Key of an output's metric (its mean over volumes) in results and ``metrics.json``:
    ``sr_psnr``."""
    return f"{output}_{metric}"


def std_key(key: str) -> str:
    """Key of the std over volumes that goes with the mean under ``key``: ``sr_psnr_std``."""
    return f"{key}_std"


#: every output's every metric, outputs first: ``sr_psnr``, ``sr_ssim``, ..., ``rec_nmse``
SCORE_KEYS = tuple(score_key(output, metric) for output in OUTPUTS for metric in METRICS)
#: what ``metrics.json`` records of the scores: each of :data:`SCORE_KEYS` followed by its std
METRIC_KEYS = tuple(k for key in SCORE_KEYS for k in (key, std_key(key)))


class VolumeMetrics:
    """Collects per-slice outputs, groups them back into volumes, and scores each volume.

    ``add(fname, slice_idx, gt, pred)`` takes one slice (H, W); ``compute()`` stacks each
    volume's slices in slice order and returns ``{metric: {"mean", "std"}}`` over volumes
    (sample std, ``ddof=1``, as fastMRI's; 0.0 for a single volume) and the per-volume values
    under ``per_volume``.
    """

    def __init__(self) -> None:
        self._slices: Dict[str, Dict[int, tuple[np.ndarray, np.ndarray]]] = defaultdict(dict)

    def add(self, fname: str, slice_idx: int, gt: np.ndarray, pred: np.ndarray) -> None:
        """Record one slice; a slice seen twice (e.g. from a distributed sampler) is kept once."""
        self._slices[fname][int(slice_idx)] = (np.asarray(gt), np.asarray(pred))

    def merge(self, other: "VolumeMetrics") -> None:
        """Add every slice another collector holds (e.g. from another distributed rank)."""
        for fname, slices in other._slices.items():
            self._slices[fname].update(slices)

    def __len__(self) -> int:
        return len(self._slices)

    def per_volume(self) -> Dict[str, Dict[str, float]]:
        """``{fname: {metric: value}}`` for every collected volume."""
        scores = {}
        for fname, slices in sorted(self._slices.items()):
            order = sorted(slices)
            gt = np.stack([slices[i][0] for i in order])
            pred = np.stack([slices[i][1] for i in order])
            try:
                scores[fname] = {name: func(gt, pred) for name, func in METRIC_FUNCS.items()}
            except ValueError as err:
                raise ValueError(f"{fname}: {err}") from None
        return scores

    def compute(self) -> Dict[str, Mapping]:
        """Mean and std over volumes of each metric, plus the per-volume scores."""
        per_volume = self.per_volume()
        if not per_volume:
            raise ValueError("metrics: no slices were collected")
        summary: Dict[str, Mapping] = {}
        for name in METRIC_FUNCS:
            values = np.array([v[name] for v in per_volume.values()])
            std = float(values.std(ddof=1)) if values.size > 1 else 0.0
            summary[name] = {"mean": float(values.mean()), "std": std}
        summary["per_volume"] = per_volume
        return summary
