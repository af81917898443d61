"""thor_core.rl.report's trend table: counts rebuilt from metrics.jsonl rows, the trend test over steps."""

from __future__ import annotations

import math

import pytest

from thor_core.rl import report


def _rows():
    # step-level pass rate 1/4, 2/4, 3/4; episode reward 6/12 every step; step 4 made no step-level rollouts
    rows = [{"step": s, "reward": 0.5, "episode_rollouts": 12, "step_pass_rate": s / 4, "step_rollouts": 4}
            for s in (1, 2, 3)]  # fmt: skip
    rows.append({"step": 4, "reward": 0.5, "episode_rollouts": 12, "step_pass_rate": float("nan"), "step_rollouts": 0})
    return rows


def test_trends_rebuild_the_counts_and_test_them():
    reward, step = report.trends(_rows())
    assert step["successes"] == [1, 2, 3] and step["trials"] == [4, 4, 4]
    assert step["z"] == pytest.approx(math.sqrt(2))  # the by-hand case of test_stats
    assert reward["successes"] == [6, 6, 6, 6] and reward["z"] == pytest.approx(0.0)


def test_trends_table_shows_pooled_thirds_and_the_test():
    table = report.trends_table(_rows())
    assert "| step-level pass rate | 6/12 | 1/4 | 3/4 | +1.41 | 0.0786 |" in table
    assert "| episode reward (training questions) | 24/48 | 6/12 | 6/12 | +0.00 | 0.5 |" in table
    assert "| - | - |" in report.trends_table([{"step": 1, "reward": 0.0, "episode_rollouts": 0}])


def test_metrics_table_has_a_line_per_step():
    table = report.metrics_table(_rows()).splitlines()
    assert len(table) == 2 + 4 and table[0].startswith("| step | reward |")
    assert table[2].startswith("| 1 | 0.5 | - | - | 0.25 |")  # accuracy, tool_success absent -> '-'
