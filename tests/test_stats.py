"""thor_core.stats: McNemar's exact test and the paired table (pure functions)."""

from __future__ import annotations

import math

import pytest

from thor_core.stats import binomial_cdf_half, mcnemar_exact, paired_outcomes


def test_binomial_cdf_half_is_exact():
    assert binomial_cdf_half(0, 5) == 1 / 32
    assert binomial_cdf_half(2, 4) == 11 / 16
    assert binomial_cdf_half(-1, 3) == 0.0 and binomial_cdf_half(3, 3) == 1.0
    assert math.isclose(sum(math.comb(20, i) for i in range(8)) / 2**20, binomial_cdf_half(7, 20))


def test_mcnemar_exact_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == 2 / 32  # five discordant pairs, all one way
    assert mcnemar_exact(1, 9) == 2 * 11 / 1024
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)  # two-sided
    assert mcnemar_exact(5, 5) == 1.0  # capped at 1
    assert mcnemar_exact(0, 30) < 1e-8
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_paired_outcomes_counts_only_shared_keys():
    before = {("q1", 0): True, ("q1", 1): False, ("q2", 0): False, ("q3", 0): True}
    after = {("q1", 0): True, ("q1", 1): True, ("q2", 0): True, ("q4", 0): True}
    t = paired_outcomes(before, after)
    assert (t["both"], t["only_first"], t["only_second"], t["neither"], t["n"]) == (1, 0, 2, 0, 3)
    assert t["unpaired"] == 2 and t["rate_first"] == 1 / 3 and t["rate_second"] == 1.0
    assert t["p_value"] == mcnemar_exact(0, 2) == 0.5
    assert paired_outcomes({}, {})["rate_first"] is None
