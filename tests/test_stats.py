"""thor_core.stats: the paired and unpaired tests, intervals, the trend test, and pct (pure functions)."""

from __future__ import annotations

import math

import pytest

from thor_core.stats import (
    binomial_cdf_half,
    chi2_sf_df1,
    chi_square_2x2,
    mcnemar_exact,
    paired_outcomes,
    pct,
    trend_test,
    wilson_interval,
)


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


def test_wilson_interval_by_hand():
    # 15 of 60: p = 0.25, z^2/n = 0.064024; centre 0.282012 / 1.064024, half 1.842014 * sqrt(0.003125 + 0.000267)
    low, high = wilson_interval(15, 60)
    assert math.isclose(low, 0.157765, abs_tol=1e-5) and math.isclose(high, 0.372321, abs_tol=1e-5)
    assert wilson_interval(0, 10)[0] == 0.0 and math.isclose(wilson_interval(0, 10)[1], 0.277533, abs_tol=1e-5)
    assert math.isclose(wilson_interval(10, 10)[0], 1 - 0.277533, abs_tol=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(50, 100, z=1.0)[1] - 0.5 < wilson_interval(50, 100)[1] - 0.5  # smaller z, narrower
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_chi_square_2x2_by_hand():
    # [[20, 5], [5, 20]]: n = 50, ad - bc = 375, margins 25^4: chi2 = 50 * 375^2 / 25^4 = 18 exactly,
    # p = erfc(sqrt(18 / 2)) = erfc(3) = 2.209e-5; Yates: 50 * (375 - 25)^2 / 25^4 = 15.68
    chi2, p = chi_square_2x2(20, 5, 5, 20)
    assert chi2 == pytest.approx(18.0) and p == pytest.approx(math.erfc(3.0)) and p == pytest.approx(2.209e-5, rel=1e-3)
    assert chi_square_2x2(20, 5, 5, 20, yates=True)[0] == pytest.approx(15.68)
    # [[10, 20], [30, 40]]: 100 * 200^2 / (30 * 70 * 40 * 60) = 0.79365, p = 0.373 (chi-square(1) tables)
    chi2, p = chi_square_2x2(10, 20, 30, 40)
    assert chi2 == pytest.approx(4_000_000 / 5_040_000) and p == pytest.approx(0.373, abs=1e-3)
    assert chi2_sf_df1(3.841458820694124) == pytest.approx(0.05)  # the 5% critical value
    assert chi_square_2x2(5, 5, 0, 0) is None  # an empty row: undefined
    with pytest.raises(ValueError):
        chi_square_2x2(-1, 2, 3, 4)


def test_trend_test_by_hand():
    # 1/4, 2/4, 3/4 at steps 1, 2, 3: p = 1/2, T = 1(1-2) + 2(2-2) + 3(3-2) = 2,
    # Var = 1/4 * (4 + 16 + 36 - 24^2 / 12) = 1/4 * 8 = 2, z = 2 / sqrt(2) = sqrt(2)
    result = trend_test([1, 2, 3], [4, 4, 4])
    assert result["z"] == pytest.approx(math.sqrt(2))
    assert result["p_rising"] == pytest.approx(0.5 * math.erfc(1.0))  # P(Z >= sqrt 2) = erfc(1) / 2
    assert result["p_two_sided"] == pytest.approx(math.erfc(1.0))
    assert result["rate"] == 0.5 and result["n"] == 12 and result["rates"] == [0.25, 0.5, 0.75]
    falling = trend_test([3, 2, 1], [4, 4, 4])
    assert falling["z"] == pytest.approx(-math.sqrt(2)) and falling["p_rising"] > 0.9
    # scores shift-invariant, scale-invariant in z; an empty group drops out
    assert trend_test([1, 2, 3], [4, 4, 4], [10, 20, 30])["z"] == pytest.approx(math.sqrt(2))
    assert trend_test([1, 0, 2, 3], [4, 0, 4, 4], [1, 1.5, 2, 3])["z"] == pytest.approx(math.sqrt(2))


def test_trend_test_without_variance_and_bad_input():
    assert trend_test([4, 4], [4, 4])["z"] is None  # every trial a success
    assert trend_test([1, 2], [4, 4], [1, 1])["z"] is None  # one score
    assert trend_test([], [])["rate"] is None
    with pytest.raises(ValueError, match="successes <= trials"):
        trend_test([5], [4])
    with pytest.raises(ValueError, match="one value per group"):
        trend_test([1, 2], [4])


def test_pct():
    assert [pct(None), pct(0.0), pct(0.4567), pct(1.0)] == ["-", "0.0", "45.7", "100.0"]
    assert pct(0.5, "%") == "50.0%" and pct(None, "%") == "-"
