"""Evaluation metrics: pure functions of graded records (no model, no files).

Covered, per benchmark (``P`` problems, problem ``p`` with ``n_p`` graded samples of which ``c_p`` are right):

- **Avg@k** ``= (1/P) sum_p c_p / n_p``, the paper's metric (Avg@4: k = 4 samples per problem).
- **pass@k** ``= (1/P) sum_p [1 - C(n_p - c_p, k) / C(n_p, k)]``, the unbiased estimator of Chen et al. 2021
  (``pass_at_k``), with k = min(k, n_p).
- **maj@k** ``= (1/P) sum_p (1/G_p) sum_g [the majority answer of group g is right]``: each problem's samples, by
  sample index, cut into ``G_p = floor(n_p / k)`` consecutive groups of k (k = min(k, n_p)); the vote is
  ``thor_core.engine.best_of_n.majority_index`` (``maj_at_k``).
- **Intervals**: a percentile bootstrap over problems (``bootstrap_interval``): resample the P problems with
  replacement ``BOOTSTRAP_RESAMPLES`` times (fixed seed), take the 2.5th and 97.5th percentiles of the mean.
  A problem's k samples move together, so the interval does not treat them as independent (the Wilson interval
  over all answers does, and is too narrow when k > 1), and the same rule serves pass@k and maj@k, which are not
  binomial proportions.
- **The mean over benchmarks** (``macro_metrics``; the paper's "average of six") ``= (1/B) sum_b metric_b``, each
  benchmark weighted equally whatever its size; its interval resamples each benchmark's problems within that
  benchmark (a stratified bootstrap).

Also ``group_metrics`` (the above plus answered and truncated rates, mean policy tokens (mask == 1), tool calls per
answer, tool success and timeout rates, corrections per answer) for one benchmark or all;
``tool_correctness_table``, the 2x2 (all calls succeeded or not) x (correct or not) over trajectories with at least
one call, with Pearson's chi-square without continuity correction (``thor_core.stats``; reproduces the paper's
336.3, docs/METHOD.md); ``best_of_n_curve``, execution pass rate against majority vote
(``thor_core.engine.best_of_n``) for N = 1..max_n, each problem's samples cut into consecutive groups of N; and
``summarize``, all of these per benchmark, overall (pooled) and as the mean over benchmarks, the dict
``thor_core.evaluation.runner`` writes as ``summary-<tag>.json`` and ``thor_core.evaluation.report`` renders.

Not covered: statistical tests between runs (``thor_core.stats``, ``thor_core.runs.ladder``).
Kept tool calls are counted; attempts that self-correction threw away appear
only in ``corrections_per_answer`` and ``attempt_success_rate``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from thor_core.engine import best_of_n as selection
from thor_core.record import Trajectory
from thor_core.stats import chi_square_2x2


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def benchmark_of(record: Trajectory) -> str:
    return record.metadata.get("benchmark") or record.metadata.get("source") or "unknown"


def _by_problem(records: Sequence[Trajectory]) -> dict[str, list[Trajectory]]:
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for r in records:
        groups[r.question_id].append(r)
    for group in groups.values():
        group.sort(key=lambda r: r.metadata.get("sample", 0))
    return groups


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _chunks(group: Sequence[Trajectory], n: int) -> list[Sequence[Trajectory]]:
    """A problem's samples (in sample order) cut into consecutive groups of ``n``; a short tail is left out."""
    return [group[j : j + n] for j in range(0, len(group) - n + 1, n)]


def maj_at_k(group: Sequence[Trajectory], k: int) -> float:
    """maj@k of one problem: the share of its groups of k samples whose majority answer is right (k = min(k, n))."""
    chunks = _chunks(group, min(k, len(group)))
    return sum(bool(ch[selection.majority_index(ch)].correct) for ch in chunks) / len(chunks)


def problem_scores(group: Sequence[Trajectory], k: int) -> tuple[float, float, float]:
    """(mean accuracy, pass@k, maj@k) of one problem's graded samples, in sample order."""
    n, c = len(group), sum(bool(r.correct) for r in group)
    return c / n, pass_at_k(n, c, min(k, n)), maj_at_k(group, k)


#: the bootstrap's resamples and seed: 2,000 percentile resamples put the 2.5th/97.5th percentiles within about
#: half a point of their limit at the sizes here; the seed makes a summary reproducible from its records
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


#: at most this many resampled values in memory at once (resamples are drawn in batches of rows below it)
_BOOTSTRAP_BATCH = 4_000_000


def bootstrap_means(values, rng: np.random.Generator, resamples: int = BOOTSTRAP_RESAMPLES) -> np.ndarray:
    """The means of ``resamples`` resamples (with replacement, same size) of the rows of ``values``: shape
    ``(resamples,)`` for P values, ``(resamples, m)`` for a P x m array (m metrics resampled together).

    Written with numpy rather than ``scipy.stats.bootstrap``: scipy is not a dependency of the kit, and the
    stratified mean over benchmarks needs the raw resampled means anyway. Drawn in batches, so tens of thousands of
    problems (TIRGen's CoT pre-filter) stay within a few tens of MB.
    """
    x = np.asarray(values, dtype=float)
    columns = np.ascontiguousarray(x.reshape(len(x), -1).T)  # one contiguous row per metric: gathers are faster
    rows, draws = max(1, _BOOTSTRAP_BATCH // len(x)), []
    for start in range(0, resamples, rows):
        idx = rng.integers(0, len(x), size=(min(rows, resamples - start), len(x)), dtype=np.int32)
        draws.append(np.stack([column[idx].mean(axis=1) for column in columns], axis=1))
    out = np.concatenate(draws)
    return out if x.ndim > 1 else out[:, 0]


def percentile_interval(draws, level: float = 0.95) -> list[float]:
    """[lo, hi]: the (1 - level)/2 and (1 + level)/2 percentiles of bootstrap draws (a list, JSON-ready)."""
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def bootstrap_interval(values: Sequence[float], seed: int = BOOTSTRAP_SEED) -> list[float] | None:
    """95% percentile bootstrap interval of the mean of per-problem ``values``; None without values."""
    if not len(values):
        return None
    return percentile_interval(bootstrap_means(values, np.random.default_rng(seed)))


ACCURACY_METRICS = ("avg@k", "pass@k", "maj@k")


def group_metrics(records: Sequence[Trajectory], k: int) -> dict[str, Any]:
    """Accuracy (Avg@k, pass@k, maj@k with their bootstrap intervals), token and tool metrics of one group of
    graded records (one benchmark, or all)."""
    problems = _by_problem(records)
    scores = [problem_scores(group, k) for group in problems.values()]
    # the three metrics resampled together (one draw of problems), each a percentile interval of its column
    draws = bootstrap_means(scores, np.random.default_rng(BOOTSTRAP_SEED)) if scores else None
    accuracy: dict[str, Any] = {}
    for i, name in enumerate(ACCURACY_METRICS):
        accuracy[name] = _ratio(sum(s[i] for s in scores), len(scores))
        accuracy[f"{name}_ci"] = percentile_interval(draws[:, i]) if scores else None
    calls = [c for r in records for c in r.tool_calls]
    n_ok = sum(c.success for c in calls)
    n_corr = sum(len(r.corrections) for r in records)
    n = len(records)
    return {
        "problems": len(problems),
        "samples": n,
        **accuracy,
        "answered_rate": _ratio(sum(r.final_answer is not None for r in records), n),
        "truncated_rate": _ratio(sum(r.finish_reason == "length" for r in records), n),
        "mean_policy_tokens": _ratio(sum(r.n_policy_tokens for r in records), n),
        "calls_per_answer": _ratio(len(calls), n),
        "with_calls_rate": _ratio(sum(bool(r.tool_calls) for r in records), n),
        "tool_success_rate": _ratio(n_ok, len(calls)),
        "timeout_rate": _ratio(sum(c.timed_out for c in calls), len(calls)),
        "corrections_per_answer": _ratio(n_corr, n),
        "attempt_success_rate": _ratio(n_ok, len(calls) + n_corr),
    }


def tool_correctness_table(records: Sequence[Trajectory]) -> dict[str, Any]:
    """The 2x2 counts over records with at least one call, with chi-square (no continuity correction)."""
    cells = {"ok_correct": 0, "ok_wrong": 0, "fail_correct": 0, "fail_wrong": 0}
    for r in records:
        if r.tool_calls:
            cells[("ok" if r.all_calls_succeeded else "fail") + ("_correct" if r.correct else "_wrong")] += 1
    test = chi_square_2x2(cells["ok_correct"], cells["ok_wrong"], cells["fail_correct"], cells["fail_wrong"])
    return {**cells, "n": sum(cells.values()), "chi2": test[0] if test else None, "p_value": test[1] if test else None}


def best_of_n_curve(records: Sequence[Trajectory], max_n: int, *, no_call_score: float = 0.0) -> list[dict[str, Any]]:
    """Accuracy of each selector for N = 1..max_n.

    Each problem's samples (by sample index) are cut into consecutive groups of
    N; a problem's score is the mean over its groups, the curve the mean over
    problems with at least N samples. ``single`` is one sample's accuracy,
    ``oracle`` whether any sample of the group is correct (pass@N).
    ``no_call_score`` scores an answer without code calls in ``exec_pass_rate``:
    0 (ours) or 1.0 (the authors' script; ``thor_core.engine.best_of_n``).
    """
    problems = [g for g in _by_problem(records).values()]
    by_exec = partial(selection.best_of_n_exec_index, no_call_score=no_call_score)
    selectors = {**selection.SELECTORS, "exec_pass_rate": by_exec}
    rows = []
    for n in range(1, max_n + 1):
        scores: dict[str, list[float]] = {"exec_pass_rate": [], "majority_vote": [], "single": [], "oracle": []}
        for group in problems:
            chunks = _chunks(group, n)
            if not chunks:
                continue
            for name, select in selectors.items():
                scores[name].append(sum(bool(ch[select(ch, None)].correct) for ch in chunks) / len(chunks))
            scores["single"].append(sum(bool(r.correct) for ch in chunks for r in ch) / (n * len(chunks)))
            scores["oracle"].append(sum(any(r.correct for r in ch) for ch in chunks) / len(chunks))
        rows.append(
            {"n": n, "problems": len(scores["single"]), **{k: _ratio(sum(v), len(v)) for k, v in scores.items()}}
        )
    return rows


def macro_metrics(by_benchmark: dict[str, Sequence[Trajectory]], k: int) -> dict[str, Any]:
    """The mean over benchmarks of Avg@k, pass@k and maj@k (each benchmark weighs the same), with 95% intervals
    from a stratified bootstrap: each benchmark's problems are resampled within it, the means averaged."""
    scored = {name: [problem_scores(g, k) for g in _by_problem(group).values()] for name, group in by_benchmark.items()}
    scored = {name: s for name, s in scored.items() if s}
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    # per benchmark (resamples, 3) draws, averaged over benchmarks: the resampled means of the mean
    draws = np.mean([bootstrap_means(s, rng) for s in scored.values()], axis=0) if scored else None
    out: dict[str, Any] = {"benchmarks": len(scored)}
    for i, metric in enumerate(ACCURACY_METRICS):
        out[metric] = _ratio(sum(sum(s[i] for s in v) / len(v) for v in scored.values()), len(scored))
        out[f"{metric}_ci"] = percentile_interval(draws[:, i]) if scored else None
    return out


def summarize(
    records: Sequence[Trajectory], k: int, best_of_n: int | None = None, *, no_call_score: float = 0.0
) -> dict[str, Any]:
    """Metrics per benchmark, overall (all answers pooled) and as the mean over benchmarks (``macro``), the 2x2
    table, and the best-of-N curve when k >= best_of_n (``no_call_score``: see ``best_of_n_curve``)."""
    benchmarks: dict[str, list[Trajectory]] = defaultdict(list)
    for r in records:
        benchmarks[benchmark_of(r)].append(r)
    per = {name: group_metrics(group, k) for name, group in benchmarks.items()}
    macro = macro_metrics(benchmarks, k)
    summary = {
        "k": k,
        "benchmarks": per,
        "overall": group_metrics(records, k),
        "macro": macro,
        "macro_avg@k": macro["avg@k"],
        "tool_vs_correct": tool_correctness_table(records),
        "best_of_n": None,
        "no_call_score": no_call_score,
    }
    if best_of_n is not None and k >= best_of_n:
        summary["best_of_n"] = best_of_n_curve(records, best_of_n, no_call_score=no_call_score)
    return summary
