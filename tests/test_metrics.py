"""thor_core.evaluation.metrics: Avg@k, pass@k and maj@k per benchmark, their bootstrap intervals and the mean over
benchmarks, on small cases computed by hand (no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from thor_core.evaluation.metrics import (
    bootstrap_interval,
    bootstrap_means,
    group_metrics,
    maj_at_k,
    percentile_interval,
    problem_scores,
    summarize,
)
from thor_core.record import Trajectory


def rec(qid, sample, answer, gold="1", bench="b"):
    return Trajectory(
        question_id=qid, question="q", gold_answer=gold, prompt_ids=[0], completion_ids=[1], mask=[1],
        final_answer=answer, correct=answer == gold, metadata={"sample": sample, "benchmark": bench},
    )  # fmt: skip


def problem(qid, answers, bench="b"):
    return [rec(qid, i, a, bench=bench) for i, a in enumerate(answers)]


def test_maj_at_k_by_hand():
    # answers 1, 2, 2, 1 (gold 1): one group of 4 is a 2-2 tie -> the answer seen first, "1": right
    assert maj_at_k(problem("q", ["1", "2", "2", "1"]), 4) == 1.0
    # groups of 2: (1, 2) tie -> "1" right; (2, 1) tie -> "2" wrong
    assert maj_at_k(problem("q", ["1", "2", "2", "1"]), 2) == 0.5
    # a missing answer does not vote: (None, 2, 1, 1) -> "1" twice
    assert maj_at_k(problem("q", [None, "2", "1", "1"]), 4) == 1.0
    assert maj_at_k(problem("q", ["2", "2", "1"]), 4) == 0.0  # k > n: the vote of all 3
    # (mean, pass@2, maj@2) of 1 right of 4: pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert problem_scores(problem("q", ["1", "2", "2", "2"]), 2) == (0.25, 0.5, 0.5)


def test_group_metrics_avg_pass_maj_by_hand():
    records = problem("q1", ["1", "1", "2", "2"]) + problem("q2", ["2", "2", "2", "1"]) + problem("q3", ["1"] * 4)
    m = group_metrics(records, k=4)
    assert m["avg@k"] == pytest.approx((0.5 + 0.25 + 1) / 3)
    assert m["pass@k"] == 1.0  # each problem has a right sample among its 4
    assert m["maj@k"] == pytest.approx((1 + 0 + 1) / 3)  # q1: 2-2 tie -> "1" first; q2: "2" wins
    for name in ("avg@k", "pass@k", "maj@k"):
        lo, hi = m[f"{name}_ci"]
        assert lo <= m[name] <= hi
    assert m["pass@k_ci"] == [1.0, 1.0]  # every resample of all-ones has mean 1
    # maj@k's per-problem values (1, 0, 1): resample means lie in {0, 1/3, 2/3, 1}
    assert m["maj@k_ci"][0] in (0.0, pytest.approx(1 / 3)) and m["maj@k_ci"][1] == 1.0


def test_bootstrap_is_the_percentile_interval_of_resampled_means():
    values = [0.0, 0.0, 1.0, 1.0]
    rng = np.random.default_rng(0)
    draws = bootstrap_means(values, rng, resamples=5000)
    assert draws.shape == (5000,) and set(np.unique(draws)) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    # the mean of a resample is Binomial(4, 1/2) / 4: P(0) = 1/16, so the 2.5th percentile is 0 and the 97.5th is 1
    assert percentile_interval(draws) == [0.0, 1.0]
    assert np.mean(draws == 0.5) == pytest.approx(6 / 16, abs=0.02)
    assert bootstrap_interval(values) == bootstrap_interval(values)  # fixed seed: reproducible
    assert bootstrap_interval([]) is None
    assert bootstrap_interval([0.3] * 7) == pytest.approx([0.3, 0.3])


def test_summarize_reports_each_benchmark_and_their_unweighted_mean():
    # benchmark a: 4 problems all right; benchmark b: 1 problem, half right. Pooled over problems the mean is
    # (4 + 0.5) / 5 = 0.9; over benchmarks (the paper's "average of six") it is (1 + 0.5) / 2 = 0.75
    records = [r for q in range(4) for r in problem(f"a{q}", ["1", "1"], bench="a")] + problem("b0", ["1", "2"], "b")
    s = summarize(records, k=2, best_of_n=2)
    assert s["benchmarks"]["a"]["avg@k"] == 1.0 and s["benchmarks"]["b"]["avg@k"] == 0.5
    assert s["overall"]["avg@k"] == pytest.approx(0.9)
    macro = s["macro"]
    assert macro["benchmarks"] == 2 and macro["avg@k"] == pytest.approx(0.75) and s["macro_avg@k"] == macro["avg@k"]
    assert macro["pass@k"] == 1.0 and macro["maj@k"] == pytest.approx((1 + 1) / 2)  # b: 1-1 tie -> "1" first
    # stratified: a resamples to 1 always, b (one problem) to 0.5 always: the interval is the point
    assert macro["avg@k_ci"] == pytest.approx([0.75, 0.75])
    assert s["no_call_score"] == 0.0 and json.loads(json.dumps(s)) == s  # JSON-ready


def test_bootstrap_draws_in_batches_and_resamples_metrics_together(monkeypatch):
    from thor_core.evaluation import metrics

    monkeypatch.setattr(metrics, "_BOOTSTRAP_BATCH", 10)  # 7 problems: one resample row per batch
    rows = [(i % 2, 1.0, 0.5) for i in range(7)]
    draws = bootstrap_means(rows, np.random.default_rng(0), resamples=33)
    assert draws.shape == (33, 3) and (draws[:, 1] == 1.0).all() and (draws[:, 2] == 0.5).all()
    assert set(np.round(draws[:, 0] * 7).astype(int)) <= set(range(8))  # a resample's mean of 0/1 values, in 7ths
