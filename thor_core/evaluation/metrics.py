"""Evaluation metrics: pure functions of graded records (no model, no files).

Covered: ``pass_at_k`` (the unbiased estimator of Chen et al. 2021,
``1 - C(n-c, k) / C(n, k)``); ``group_metrics`` (Avg@k, pass@k, answered and
truncated rates, mean policy tokens (mask == 1), tool calls per answer, tool
success and timeout rates, corrections per answer) for one benchmark or all;
``tool_correctness_table``, the 2x2 (all calls succeeded or not) x (correct or
not) over trajectories with at least one call, with Pearson's chi-square
without continuity correction (``thor_core.stats``; reproduces
the paper's 336.3, docs/METHOD.md); ``best_of_n_curve``, execution pass rate against
majority vote (``thor_core.engine.best_of_n``) for N = 1..max_n, each problem's
samples cut into consecutive groups of N; and ``summarize``, all of these per
benchmark and overall, the dict ``thor_core.evaluation.runner`` writes as
``summary-<tag>.json`` and ``thor_core.evaluation.report`` renders.

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


def group_metrics(records: Sequence[Trajectory], k: int) -> dict[str, Any]:
    """Accuracy, token and tool metrics of one group of graded records (one benchmark, or all)."""
    problems = _by_problem(records)
    correct = [[bool(r.correct) for r in group] for group in problems.values()]
    calls = [c for r in records for c in r.tool_calls]
    n_ok = sum(c.success for c in calls)
    n_corr = sum(len(r.corrections) for r in records)
    n = len(records)
    return {
        "problems": len(problems),
        "samples": n,
        "avg@k": _ratio(sum(sum(c) / len(c) for c in correct), len(correct)),
        "pass@k": _ratio(sum(pass_at_k(len(c), sum(c), min(k, len(c))) for c in correct), len(correct)),
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
            chunks = [group[j : j + n] for j in range(0, len(group) - n + 1, n)]
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


def summarize(
    records: Sequence[Trajectory], k: int, best_of_n: int | None = None, *, no_call_score: float = 0.0
) -> dict[str, Any]:
    """Metrics per benchmark and overall, the 2x2 table, and the best-of-N curve when k >= best_of_n
    (``no_call_score``: see ``best_of_n_curve``)."""
    benchmarks: dict[str, list[Trajectory]] = defaultdict(list)
    for r in records:
        benchmarks[benchmark_of(r)].append(r)
    per = {name: group_metrics(group, k) for name, group in benchmarks.items()}
    accuracies = [m["avg@k"] for m in per.values() if m["avg@k"] is not None]
    summary = {
        "k": k,
        "benchmarks": per,
        "overall": group_metrics(records, k),
        "macro_avg@k": _ratio(sum(accuracies), len(accuracies)),
        "tool_vs_correct": tool_correctness_table(records),
        "best_of_n": None,
    }
    if best_of_n is not None and k >= best_of_n:
        summary["best_of_n"] = best_of_n_curve(records, best_of_n, no_call_score=no_call_score)
    return summary
