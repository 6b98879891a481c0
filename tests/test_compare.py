"""cmfnet.commands.report.compare: paired differences over test volumes with known answers
(constant, symmetric, seed-paired), the bootstrap's seeding, the signed-rank p, and the pairs
that cannot be made."""

from __future__ import annotations

import numpy as np
import pytest

from cmfnet.commands.report.compare import (
    ALPHA,
    NotComparable,
    bootstrap_interval,
    pair_runs,
    signed_rank_p,
    volume_differences,
)

VOLUMES = [f"vol{i:02d}.h5" for i in range(10)]


def scores(values) -> dict[str, float]:
    return dict(zip(VOLUMES, map(float, values)))


def test_a_constant_one_db_gain_has_the_interval_one_to_one_and_a_small_p():
    reference = np.arange(20.0, 40.0, 2.0)  # volumes differ a lot from each other
    paired = pair_runs({42: scores(reference + 1.0)}, {42: scores(reference)}, 10_000, 0)
    assert (paired.diff, paired.ci_low, paired.ci_high) == (1.0, 1.0, 1.0)
    assert paired.p == pytest.approx(2 / 2**10) and paired.p < ALPHA  # exact two-sided test
    assert (paired.n_volumes, paired.n_seeds) == (10, 1)
    assert paired.significant


def test_symmetric_differences_contain_zero_and_are_not_significant():
    offsets = [-3.0, -2.0, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 2.0, 3.0]
    paired = pair_runs({1: scores(30.0 + np.array(offsets))}, {1: scores([30.0] * 10)}, 2_000, 0)
    assert paired.diff == 0.0
    assert paired.ci_low < 0.0 < paired.ci_high
    assert paired.p == pytest.approx(1.0)
    assert not paired.significant


def test_an_interval_that_excludes_zero_with_a_large_p_is_not_significant():
    """Two volumes: the bootstrap interval of +1, +2 is [1, 2], but the exact signed-rank test
    over 2 volumes cannot go below p = 0.5."""
    method = {42: {"a": 31.0, "b": 32.0}}
    reference = {42: {"a": 30.0, "b": 30.0}}
    paired = pair_runs(method, reference, 1_000, 0)
    assert paired.ci_low >= 1.0 and paired.p == pytest.approx(0.5)
    assert not paired.significant


def test_seeds_are_paired_by_seed_and_volume_then_averaged_per_volume():
    reference = np.arange(20.0, 40.0, 2.0)
    method = {42: scores(reference + 2.0), 43: scores(reference + 5.0)}
    theirs = {42: scores(reference), 43: scores(reference + 3.0)}
    diffs, seeds = volume_differences(method, theirs)
    assert seeds == [42, 43] and diffs.tolist() == [2.0] * len(VOLUMES)
    paired = pair_runs(method, theirs, 1_000, 0)
    assert (paired.ci_low, paired.ci_high, paired.n_volumes, paired.n_seeds) == (2.0, 2.0, 10, 2)


def test_only_the_common_seeds_are_paired():
    reference = scores(np.arange(20.0, 40.0, 2.0))
    shifted = {v: s + 1.0 for v, s in reference.items()}
    wild = {v: s - 100.0 for v, s in reference.items()}
    diffs, seeds = volume_differences({42: shifted, 7: wild}, {42: reference, 8: wild})
    assert seeds == [42] and set(diffs.tolist()) == {1.0}


def test_bootstrap_is_reproducible_from_its_seed():
    diffs = np.random.default_rng(3).normal(0.5, 1.0, size=12)
    assert bootstrap_interval(diffs, 5_000, 11) == bootstrap_interval(diffs, 5_000, 11)
    assert bootstrap_interval(diffs, 5_000, 11) != bootstrap_interval(diffs, 5_000, 12)
    low, high = bootstrap_interval(diffs, 5_000, 11)
    assert low < diffs.mean() < high


def test_no_difference_at_all_has_p_one():
    assert signed_rank_p(np.zeros(5)) == 1.0


@pytest.mark.parametrize(
    "method, reference, reason",
    [
        ({7: {"a": 1.0}}, {42: {"a": 1.0}}, "no seed in common"),
        ({42: {"a": 1.0, "b": 2.0}}, {42: {"a": 1.0}}, "seed 42: the test volumes differ"),
        ({42: {"a": float("nan")}}, {42: {"a": 1.0}}, "not finite"),
        ({42: {"a": float("inf")}}, {42: {"a": float("inf")}}, "not finite"),
    ],
)
def test_pairs_that_cannot_be_made_say_why(method, reference, reason):
    with pytest.raises(NotComparable, match=reason):
        volume_differences(method, reference)
