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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

#: why a volume cannot be scored (shared by the numpy metrics and :class:`VolumeSums`)
NON_FINITE_TARGET = "metrics: the ground truth holds NaN or inf"
NO_POSITIVE_TARGET = (
    "metrics: the ground truth has no positive value (all zeros?), "
    "so PSNR, SSIM and NMSE are undefined"
)


def _check_volumes(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape:
        raise ValueError(
            f"metrics: ground truth {gt.shape} and prediction {pred.shape} differ in shape"
        )
    if gt.ndim != 3:
        raise ValueError(f"metrics: expected volumes (slices, H, W), got {gt.ndim} dimensions")
    # a non-finite prediction scores NaN: a diverged model, not bad data
    if not np.isfinite(gt).all():
        raise ValueError(NON_FINITE_TARGET)
    if not gt.max() > 0:
        raise ValueError(NO_POSITIVE_TARGET)


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
#: decimals each metric is shown with (results tables, the report, the end-of-run line), and the
#: precision at which the report compares values when it picks the best one
METRIC_DIGITS = {"psnr": 2, "ssim": 4, "nmse": 4}
#: the network's outputs, each scored against its own target: super-resolved (the headline),
#: reconstructed
OUTPUTS = ("sr", "rec")


def score_key(output: str, metric: str) -> str:
    """Key of an output's metric (its mean over volumes) in results and ``metrics.json``:
    ``sr_psnr``."""
    return f"{output}_{metric}"


def metric_digits(key: str) -> int:
    """:data:`METRIC_DIGITS` of a metric (``psnr``) or of a score key (``sr_psnr``)."""
    return METRIC_DIGITS[key.rpartition("_")[2]]


def std_key(key: str) -> str:
    """Key of the std over volumes that goes with the mean under ``key``: ``sr_psnr_std``."""
    return f"{key}_std"


#: the run-folder file holding every test volume's scores, one row per scoring, output and
#: volume (:func:`volume_scores_csv`); ``cmfnet report`` pairs methods on it
VOLUME_SCORES_FILE = "test_volumes.csv"
VOLUME_SCORES_COLUMNS = ("scoring", "output", "volume", *METRICS)


def volume_scores_csv(scores: Mapping[tuple[str, str], Mapping[str, Mapping[str, float]]]) -> str:
    """CSV text of ``{(scoring, output): {volume: {metric: value}}}``: the columns
    :data:`VOLUME_SCORES_COLUMNS`, sorted rows, floats as ``repr`` (read back exactly; a
    non-finite score as ``nan`` or ``inf``)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(VOLUME_SCORES_COLUMNS)
    for (scoring, output), volumes in sorted(scores.items()):
        for volume, values in sorted(volumes.items()):
            writer.writerow([scoring, output, volume, *(repr(float(values[m])) for m in METRICS)])
    return buffer.getvalue()


def read_volume_scores(path: Path) -> Dict[tuple[str, str], Dict[str, Dict[str, float]]]:
    """A :data:`VOLUME_SCORES_FILE` as ``{(scoring, output): {volume: {metric: value}}}``; raises
    ValueError naming the file when it is unreadable or malformed."""
    import csv

    scores: Dict[tuple[str, str], Dict[str, Dict[str, float]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != VOLUME_SCORES_COLUMNS:
                raise ValueError(f"columns {reader.fieldnames}, expected {VOLUME_SCORES_COLUMNS}")
            for row in reader:
                values = {metric: float(row[metric]) for metric in METRICS}
                scores.setdefault((row["scoring"], row["output"]), {})[row["volume"]] = values
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: unreadable per-volume scores ({err})") from None
    return scores


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

    def nbytes(self) -> int:
        """Bytes of the images kept (a target and a prediction per slice)."""
        return sum(a.nbytes for s in self._slices.values() for pair in s.values() for a in pair)

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
        return summarize(self.per_volume())


def summarize(per_volume: Dict[str, Dict[str, float]]) -> Dict[str, Mapping]:
    """``{metric: {"mean", "std"}}`` over volumes (sample std, ``ddof=1``, as fastMRI's; 0.0 for
    a single volume) of ``{fname: {metric: value}}``, which is kept under ``per_volume``."""
    if not per_volume:
        raise ValueError("metrics: no slices were collected")
    summary: Dict[str, Mapping] = {}
    for name in METRIC_FUNCS:
        values = np.array([v[name] for v in per_volume.values()])
        std = float(values.std(ddof=1)) if values.size > 1 else 0.0
        summary[name] = {"mean": float(values.mean()), "std": std}
    summary["per_volume"] = per_volume
    return summary


# --------------------------------------------------------------------------------------------
# Streaming metrics: each batch is reduced to a few numbers per slice on its device as it is
# scored; the numbers are summed across ranks at the end.
# --------------------------------------------------------------------------------------------

#: scikit-image's SSIM settings, which fastMRI uses: window side, K1, K2
SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: what :func:`slice_stats` keeps of a slice, in column order: summed squared error, summed
#: squared target, pixel count, SSIM, target maximum, the data range SSIM used, and a count of 1
SLICE_STATS = ("sse", "energy", "pixels", "ssim", "target_max", "maxval", "count")
#: a volume whose scored target maximum differs from its advance data range by more than this,
#: relatively, is named by :meth:`VolumeSums.max_mismatches`. The module scores the de-normalised
#: target ``x * std + mean``, which differs from the raw maximum by float32 rounding (about 1e-7).
MAX_RTOL = 1e-5


def accumulation_dtype(device: "torch.device") -> "torch.dtype":
    """float64 for sums and SSIM means, except on Apple's MPS, which has no float64 (float32)."""
    import torch

    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def ssim_slices(gt: "torch.Tensor", pred: "torch.Tensor", maxval: "torch.Tensor") -> "torch.Tensor":
    """scikit-image's ``structural_similarity`` of each slice pair, in torch on their device.

    ``gt``, ``pred``: (B, H, W) with H, W >= 7; ``maxval``: (B,) each slice's data range (fastMRI:
    its volume's maximum). Returns (B,) in :func:`accumulation_dtype`.

    The definition is skimage's: a 7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance
    (x 49/48), computed in the inputs' float type (float32 stays float32, as in skimage). skimage
    filters with reflected borders and then averages the SSIM map without its 3-pixel border, so
    the border never enters the mean: a box filter over the valid positions only gives the same
    map (:func:`box_mean`).
    """
    import torch

    x, y = gt.unsqueeze(1), pred.unsqueeze(1)
    moments = box_mean(torch.cat((x, y, x * x, y * y, x * y), dim=1), SSIM_WINDOW)
    ux, uy, uxx, uyy, uxy = moments.unbind(1)
    points = SSIM_WINDOW**2
    cov_norm = points / (points - 1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    data_range = maxval.to(gt.dtype).view(-1, 1, 1)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    dtype = accumulation_dtype(gt.device)
    return ssim_map.sum(dim=(-2, -1), dtype=dtype) / (ssim_map.shape[-2] * ssim_map.shape[-1])


def box_mean(images: "torch.Tensor", size: int) -> "torch.Tensor":
    """Mean over each ``size`` x ``size`` window that fits inside the image ('valid' positions):
    (..., H, W) -> (..., H - size + 1, W - size + 1). Separable sums over window views: on a CPU
    several times faster than ``avg_pool2d`` with stride 1."""
    rows = images.unfold(-2, size, 1).sum(-1)
    return rows.unfold(-1, size, 1).sum(-1) / (size * size)


def slice_stats(gt: "torch.Tensor", pred: "torch.Tensor", maxval: "torch.Tensor") -> "torch.Tensor":
    """The :data:`SLICE_STATS` of each slice pair: (B, H, W), (B, H, W), (B,) -> (B, 7).

    Computed on the slices' device in the wider of their float types (at least float32) and
    summed in :func:`accumulation_dtype`; nothing is read back to the host.
    """
    import torch

    dtype = torch.promote_types(torch.promote_types(gt.dtype, pred.dtype), torch.float32)
    gt, pred = gt.to(dtype), pred.to(dtype)
    acc = accumulation_dtype(gt.device)
    pixels = gt.shape[-2] * gt.shape[-1]
    columns = (
        (gt - pred).square().sum(dim=(-2, -1), dtype=acc),
        gt.square().sum(dim=(-2, -1), dtype=acc),
        torch.full((gt.shape[0],), pixels, dtype=acc, device=gt.device),
        ssim_slices(gt, pred, maxval),
        gt.amax(dim=(-2, -1)).to(acc),
        maxval.to(device=gt.device, dtype=acc),
        torch.ones(gt.shape[0], dtype=acc, device=gt.device),
    )
    return torch.stack(columns, dim=1)


@dataclass(frozen=True)
class VolumeSums:
    """The scored slices of every volume, all ranks together, summed per volume.

    Arrays are float64 of shape (volumes,), in the order of ``names`` (sorted).

    Attributes:
        names: the volumes' file names.
        slices: how many distinct slices were scored.
        sse, energy, pixels: sums of squared error, of squared target, and pixel counts.
        ssim: sum of the slices' SSIM.
        target_max: the largest value of the scored target.
        maxval_min, maxval_max: the smallest and largest data range its slices' SSIM used.
    """

    names: tuple[str, ...]
    slices: np.ndarray
    sse: np.ndarray
    energy: np.ndarray
    pixels: np.ndarray
    ssim: np.ndarray
    target_max: np.ndarray
    maxval_min: np.ndarray
    maxval_max: np.ndarray

    @classmethod
    def from_slices(cls, names: Sequence[str], grid: np.ndarray) -> "VolumeSums":
        """From ``grid`` (volumes, slice index, :data:`SLICE_STATS`): each slice's statistics
        summed over every time it was scored; the count column says how many times (0: never).
        A slice scored more than once counts once (its statistics divided by its count)."""
        count = grid[..., SLICE_STATS.index("count")]
        seen = count > 0
        mean = grid / np.where(seen, count, 1.0)[..., None]

        def column(name: str, fill: float) -> np.ndarray:
            return np.where(seen, mean[..., SLICE_STATS.index(name)], fill)

        return cls(
            names=tuple(names),
            slices=seen.sum(axis=1).astype(np.float64),
            sse=column("sse", 0.0).sum(axis=1),
            energy=column("energy", 0.0).sum(axis=1),
            pixels=column("pixels", 0.0).sum(axis=1),
            ssim=column("ssim", 0.0).sum(axis=1),
            target_max=column("target_max", -np.inf).max(axis=1, initial=-np.inf),
            maxval_min=column("maxval", np.inf).min(axis=1, initial=np.inf),
            maxval_max=column("maxval", -np.inf).max(axis=1, initial=-np.inf),
        )

    def __len__(self) -> int:
        return len(self.names)

    def per_volume(self) -> Dict[str, Dict[str, float]]:
        """``{fname: {metric: value}}`` with fastMRI's definitions: PSNR with the data range
        ``target_max`` (fastMRI's ``gt.max()`` of the scored volume), SSIM the mean of the
        slices' (each with its advance data range), NMSE over the whole volume. Raises
        ValueError naming the volume where a score is undefined, as :class:`VolumeMetrics`."""
        scores = {}
        for i, fname in enumerate(self.names):
            if not (np.isfinite(self.energy[i]) and np.isfinite(self.target_max[i])):
                raise ValueError(f"{fname}: {NON_FINITE_TARGET}")
            if not self.target_max[i] > 0:
                raise ValueError(f"{fname}: {NO_POSITIVE_TARGET}")
            if not (np.isfinite(self.maxval_max[i]) and self.maxval_min[i] > 0):
                raise ValueError(
                    f"{fname}: metrics: no data range (the volume's maximum) was given in advance "
                    "to score SSIM with (a sample's sr_max/rec_max is 0 until "
                    "PairedSliceDataset.compute_volume_maxima() has run)"
                )
            with np.errstate(divide="ignore"):  # a perfect prediction: PSNR inf, as skimage's
                psnr_db = 10 * np.log10(self.target_max[i] ** 2 / (self.sse[i] / self.pixels[i]))
            scores[fname] = {
                "psnr": float(psnr_db),
                "ssim": float(self.ssim[i] / self.slices[i]),
                "nmse": float(self.sse[i] / self.energy[i]),
            }
        return scores

    def compute(self) -> Dict[str, Mapping]:
        """:meth:`VolumeMetrics.compute`'s dict: mean and std over volumes, and ``per_volume``."""
        return summarize(self.per_volume())

    def max_mismatches(self, rtol: float = MAX_RTOL) -> list[str]:
        """Names of the volumes whose scored target maximum differs from the data range their
        SSIM used (or whose slices were given different ranges) by more than ``rtol``
        relatively. With an advance range that is the volume's maximum there are none; a
        scoring that clamps the target before scoring makes some."""
        scale = rtol * np.abs(self.maxval_max)
        off = (np.abs(self.target_max - self.maxval_max) > scale) | (
            self.maxval_max - self.maxval_min > scale
        )
        return [name for name, bad in zip(self.names, off) if bad]


class StreamingVolumeMetrics:
    """Per-volume PSNR, NMSE and SSIM accumulated on a torch device as batches are scored.

    :meth:`update` reduces each slice pair at once to its :data:`SLICE_STATS`, on the slices'
    device, with no host read: memory grows with the number of slices (7 numbers each), not
    with pixels. :meth:`reduce` places every slice at (volume, slice index) of one tensor, sums
    it across ranks with ``all_reduce`` when ``torch.distributed`` is initialised, and returns
    the :class:`VolumeSums`; :meth:`compute` gives :meth:`VolumeMetrics.compute`'s dict.

    A slice scored more than once counts once: Lightning's ``DistributedSampler`` pads each
    rank's share with repeated samples, which may land on another rank, so each slice's sums
    travel with a count and are divided by it after the sum. The ranks agree on one index of
    volumes by exchanging their names (``all_gather_object`` of one string per volume).

    SSIM needs the data range (fastMRI: the volume's maximum) before the volume is complete, so
    :meth:`update` takes it per slice (``maxval``; the datasets' ``sr_max`` and ``rec_max``).
    PSNR uses the maximum of the scored target over the volume, tracked as it streams by: both
    are fastMRI's ``gt.max()`` when the advance range is right, and
    :meth:`VolumeSums.max_mismatches` names the volumes where they differ.

    Args:
        device: where the per-slice statistics are placed and summed (the scored tensors'
            device; under ``torch.distributed`` one the backend can reduce: CUDA for NCCL).
    """

    def __init__(self, device: "torch.device | str" = "cpu"):
        import torch

        self.device = torch.device(device)
        self._volumes: Dict[str, int] = {}
        self._volume_ids: list[int] = []
        self._slice_ids: list[int] = []
        self._stats: list["torch.Tensor"] = []

    def update(
        self,
        fnames: Sequence[str],
        slice_idx: Sequence[int],
        gt: "torch.Tensor",
        pred: "torch.Tensor",
        maxval: "torch.Tensor",
    ) -> None:
        """Score a batch: ``gt`` and ``pred`` (B, H, W) with H, W >= 7, ``maxval`` (B,) the data
        range of each slice's volume; ``fnames`` and ``slice_idx`` (host lists) name each slice."""
        batch = gt.shape[0]
        if gt.shape != pred.shape or gt.ndim != 3:
            raise ValueError(
                f"metrics: expected target and prediction (B, H, W) of one shape, got "
                f"{tuple(gt.shape)} and {tuple(pred.shape)}"
            )
        if min(gt.shape[-2:]) < SSIM_WINDOW:
            raise ValueError(
                f"metrics: slices of {tuple(gt.shape[-2:])} are smaller than SSIM's "
                f"{SSIM_WINDOW}x{SSIM_WINDOW} window"
            )
        if len(fnames) != batch or len(slice_idx) != batch or tuple(maxval.shape) != (batch,):
            raise ValueError(
                f"metrics: a batch of {batch} slices needs {batch} names, slice indices and "
                f"data ranges, got {len(fnames)}, {len(slice_idx)} and {tuple(maxval.shape)}"
            )
        if any(int(index) < 0 for index in slice_idx):
            raise ValueError(f"metrics: negative slice index in {list(slice_idx)}")
        for fname in fnames:
            self._volumes.setdefault(fname, len(self._volumes))
        self._volume_ids += [self._volumes[fname] for fname in fnames]
        self._slice_ids += [int(index) for index in slice_idx]
        self._stats.append(slice_stats(gt, pred, maxval))

    def nbytes(self) -> int:
        """Bytes of the per-slice statistics kept (:data:`SLICE_STATS`: 7 numbers a slice)."""
        return sum(stats.numel() * stats.element_size() for stats in self._stats)

    def reduce(self) -> VolumeSums:
        """Every rank's slices, summed per (volume, slice) and then per volume. Under
        ``torch.distributed`` this is a collective call: every rank must make it."""
        import torch
        import torch.distributed as dist

        names = sorted(self._volumes)
        last_slice = max(self._slice_ids, default=-1)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (names, last_slice))
            names = sorted(set().union(*(part for part, _ in gathered)))
            last_slice = max(part for _, part in gathered)
        index = {name: i for i, name in enumerate(names)}
        dtype = accumulation_dtype(self.device)
        grid = torch.zeros(
            (len(names), last_slice + 1, len(SLICE_STATS)), dtype=dtype, device=self.device
        )
        if self._stats:
            global_id = [index[name] for name in self._volumes]  # in local id order
            rows = torch.tensor([global_id[v] for v in self._volume_ids], device=self.device)
            cols = torch.tensor(self._slice_ids, device=self.device)
            stats = torch.cat([s.to(self.device, dtype) for s in self._stats])
            grid.index_put_((rows, cols), stats, accumulate=True)
        if distributed:
            dist.all_reduce(grid)
        return VolumeSums.from_slices(names, grid.cpu().double().numpy())

    def compute(self) -> Dict[str, Mapping]:
        """``reduce().compute()``: a collective call under ``torch.distributed``."""
        return self.reduce().compute()
