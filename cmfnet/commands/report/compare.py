"""Paired comparison of two methods on the same test volumes: how sure a difference is.

Each run of a method writes every test volume's scores (``test_volumes.csv``,
:data:`cmfnet.mri.metrics.VOLUME_SCORES_FILE`). For one setting, output and metric,
:func:`volume_differences` pairs a method's runs with the reference method's by (seed,
volume) on the seeds both have, and averages each volume's differences over those seeds: one
difference per volume (method minus reference), so a volume counts once however many seeds
there are. :func:`compare` then gives their mean, a percentile bootstrap 95% interval over
volumes (seeded resamples of the volumes with replacement) and the two-sided Wilcoxon
signed-rank p-value (``scipy.stats.wilcoxon``, volumes with a zero difference left out, as its
default). A difference is significant when its interval excludes 0 and p < :data:`ALPHA`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

#: significance level of the signed-rank test
ALPHA = 0.05
#: bootstrap interval's coverage
CONFIDENCE = 0.95

#: one run's scores of one output and metric: volume -> value
VolumeScores = Mapping[str, float]


class NotComparable(ValueError):
    """Why a method cannot be paired with the reference in one setting (one line)."""


@dataclass(frozen=True)
class Paired:
    """A method minus the reference over paired test volumes."""

    diff: float
    ci_low: float
    ci_high: float
    p: float
    n_volumes: int
    n_seeds: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0 and the signed-rank test rejects at :data:`ALPHA`."""
        return not (self.ci_low <= 0.0 <= self.ci_high) and self.p < ALPHA


def volume_differences(
    method: Mapping[int, VolumeScores], reference: Mapping[int, VolumeScores]
) -> tuple[np.ndarray, list[int]]:
    """Per-volume differences (volumes sorted by name), each the mean over the common seeds of
    method minus reference, and those seeds. ``method`` and ``reference`` map seed -> volume ->
    score. Raises :class:`NotComparable` when no seed is common, a common seed's runs scored
    different volumes, or a paired score is not finite."""
    seeds = sorted(set(method) & set(reference))
    if not seeds:
        raise NotComparable(
            f"no seed in common with the reference (seeds {sorted(method)} and {sorted(reference)})"
        )
    volumes = sorted(reference[seeds[0]])
    for seed in seeds:
        if sorted(method[seed]) != volumes or sorted(reference[seed]) != volumes:
            raise NotComparable(f"seed {seed}: the test volumes differ from the reference's")
    diffs = np.array(
        [[method[s][v] - reference[s][v] for v in volumes] for s in seeds], dtype=np.float64
    )
    if not np.isfinite(diffs).all():
        raise NotComparable("a per-volume score is not finite (a diverged run?)")
    return diffs.mean(axis=0), seeds


def bootstrap_interval(diffs: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval (:data:`CONFIDENCE`) of the mean of ``diffs``: ``resamples``
    means of the volumes drawn with replacement by ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[picks].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def signed_rank_p(diffs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``diffs``; 1.0 when every difference is 0
    (nothing to rank)."""
    from scipy.stats import wilcoxon

    if not np.any(diffs):
        return 1.0
    return float(wilcoxon(diffs).pvalue)


def compare(diffs: np.ndarray, n_seeds: int, resamples: int, seed: int) -> Paired:
    """:class:`Paired` of per-volume differences (:func:`volume_differences`)."""
    low, high = bootstrap_interval(diffs, resamples, seed)
    return Paired(
        diff=math.fsum(diffs) / len(diffs),
        ci_low=low,
        ci_high=high,
        p=signed_rank_p(diffs),
        n_volumes=len(diffs),
        n_seeds=n_seeds,
    )


def pair_runs(
    method: Mapping[int, VolumeScores],
    reference: Mapping[int, VolumeScores],
    resamples: int,
    seed: int,
) -> Paired:
    """:func:`volume_differences` then :func:`compare`."""
    diffs, seeds = volume_differences(method, reference)
    return compare(diffs, len(seeds), resamples, seed)


def seeds_left_out(method: Sequence[int], reference: Sequence[int]) -> list[int]:
    """The seeds of either side that the pairing leaves out (not run by the other)."""
    return sorted(set(method) ^ set(reference))
