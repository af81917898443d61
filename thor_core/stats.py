"""Paired significance tests for before/after comparisons (pure functions, no scipy).

Covered: McNemar's exact test on paired binary outcomes. Two models answer
the same (question, sample) pairs under the same seeds; only the discordant
pairs carry information: ``b`` = pairs the first model got and the second did
not, ``c`` = the reverse. Under the null (both models equally good) each
discordant pair is a fair coin, so the two-sided p-value is
``min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``, computed
exactly with integer binomial coefficients. ``paired_outcomes`` builds the
table from two mappings of key -> bool; ``mcnemar_exact`` tests it.

``chi_square_2x2``: Pearson's chi-square of an unpaired 2x2 table (e.g.
tool success x correctness), without continuity correction unless asked, and
its p-value from the chi-square(1) survival function
``P(X >= x) = erfc(sqrt(x / 2))`` (``chi2_sf_df1``; scipy is not needed).

``wilson_interval`` gives the Wilson score interval of a binomial proportion
(95% by default), which stays inside [0, 1] and behaves at 0 and n successes.

``trend_test``: the Cochran-Armitage test for a linear trend in proportions
over ordered groups (a rate per training step: "does the step-level pass rate
rise over training?"). With ``x_i`` successes of ``n_i`` at score ``t_i``
(the step), ``p = sum x / sum n``, ``T = sum t_i (x_i - n_i p)`` and
``Var T = p (1 - p) (sum n_i t_i^2 - (sum n_i t_i)^2 / N)``; ``z = T / sqrt(Var T)``
is standard normal under "no trend". It uses every step, where a first-half /
second-half comparison throws away the order inside each half.

``pct`` formats a proportion as a percentage (one decimal, ``-`` for None), the
one formatter of the reports' tables.

Not covered: the mid-p or continuity-corrected chi-square variants, exact trend tests, other
interval methods (Clopper-Pearson, bootstrap), or clustering (several samples
of one question are treated as independent pairs; with k > 1 samples per
question the p-value is optimistic, and the Wilson interval too narrow).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any


def binomial_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (as a float at the end)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c``; 1.0 when both are 0."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf_half(min(b, c), n))


def paired_outcomes(first: Mapping[Hashable, bool], second: Mapping[Hashable, bool]) -> dict[str, Any]:
    """The 2x2 paired table over the keys both mappings hold, with McNemar's exact p-value.

    ``both``/``neither``: concordant pairs; ``only_first`` (b) and
    ``only_second`` (c): discordant ones. ``rate_first``/``rate_second`` are
    the shares of True over the shared keys; ``unpaired`` counts keys only one
    side has (left out of the test).
    """
    shared = sorted(set(first) & set(second), key=repr)
    table = {"both": 0, "only_first": 0, "only_second": 0, "neither": 0}
    for key in shared:
        a, z = bool(first[key]), bool(second[key])
        table["both" if a and z else "only_first" if a else "only_second" if z else "neither"] += 1
    n = len(shared)
    return {
        **table,
        "n": n,
        "unpaired": len(set(first) ^ set(second)),
        "rate_first": (table["both"] + table["only_first"]) / n if n else None,
        "rate_second": (table["both"] + table["only_second"]) / n if n else None,
        "p_value": mcnemar_exact(table["only_first"], table["only_second"]),
    }


Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` (95% with the default ``z``); (0, 1) when n is 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def chi2_sf_df1(x: float) -> float:
    """P(X >= x) for a chi-square variable with one degree of freedom: erfc(sqrt(x / 2))."""
    return math.erfc(math.sqrt(max(x, 0.0) / 2.0))


def chi_square_2x2(a: int, b: int, c: int, d: int, yates: bool = False) -> tuple[float, float] | None:
    """Pearson's chi-square of [[a, b], [c, d]] and its p-value (df = 1); None if a margin is zero.

    ``chi2 = n (ad - bc)^2 / ((a+b)(c+d)(a+c)(b+d))``; ``yates=True`` subtracts
    n/2 from ``|ad - bc|`` first (the continuity correction; the paper's 336.3 is without it).
    """
    if min(a, b, c, d) < 0:
        raise ValueError(f"counts must be >= 0, got {(a, b, c, d)}")
    n = a + b + c + d
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins == 0:
        return None
    diff = abs(a * d - b * c)
    if yates:
        diff = max(0.0, diff - n / 2)
    chi2 = n * diff**2 / margins
    return chi2, chi2_sf_df1(chi2)


def pct(x: float | None, suffix: str = "") -> str:
    """A proportion as a percentage for the reports' tables: ``0.4567`` -> ``45.7`` (``+ suffix``), None -> ``-``."""
    return "-" if x is None else f"{100 * x:.1f}{suffix}"


def normal_sf(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def trend_test(
    successes: Sequence[int], trials: Sequence[int], scores: Sequence[float] | None = None
) -> dict[str, Any]:
    """Cochran-Armitage trend test of ``successes[i]`` out of ``trials[i]`` at ``scores[i]`` (default 1, 2, ...).

    Returns ``z`` (> 0: rising), ``p_rising`` (one-sided, P(Z >= z)), ``p_two_sided``, the pooled ``rate``,
    ``n`` and the per-group ``rates``; ``z`` and the p-values are None when there is no variance (all groups
    empty or at one score, or every trial a success or every one a failure). Groups with 0 trials drop out.
    """
    if len(successes) != len(trials) or (scores is not None and len(scores) != len(trials)):
        raise ValueError(
            f"successes, trials and scores need one value per group, got "
            f"{len(successes)}, {len(trials)}, {None if scores is None else len(scores)}"
        )
    if any(n < 0 or not 0 <= x <= n for x, n in zip(successes, trials)):
        raise ValueError(f"need 0 <= successes <= trials per group, got {list(zip(successes, trials))}")
    ts = list(scores) if scores is not None else list(range(1, len(trials) + 1))
    groups = [(x, n, t) for x, n, t in zip(successes, trials, ts) if n > 0]
    big_n = sum(n for _, n, _ in groups)
    total = sum(x for x, _, _ in groups)
    out: dict[str, Any] = {
        "z": None,
        "p_rising": None,
        "p_two_sided": None,
        "n": big_n,
        "rate": total / big_n if big_n else None,
        "rates": [x / n for x, n, _ in groups],
    }
    if not big_n:
        return out
    p = total / big_n
    t_stat = sum(t * (x - n * p) for x, n, t in groups)
    spread = sum(n * t * t for _, n, t in groups) - sum(n * t for _, n, t in groups) ** 2 / big_n
    variance = p * (1 - p) * spread
    if variance <= 1e-12:
        return out
    z = t_stat / math.sqrt(variance)
    return {**out, "z": z, "p_rising": normal_sf(z), "p_two_sided": min(1.0, 2 * normal_sf(abs(z)))}
