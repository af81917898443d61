"""Best-of-N by execution pass rate and majority vote, on hand-made records."""

from __future__ import annotations

import pytest

from thor_core.engine.best_of_n import (
    answer_groups,
    best_of_n_exec,
    best_of_n_exec_index,
    exec_pass_rate,
    exec_score,
    majority_index,
    majority_vote,
    vote_key,
)
from thor_core.record import ToolCall, Trajectory


def traj(answer: str | None, calls: tuple[bool, ...] = (), name: str = "") -> Trajectory:
    return Trajectory(
        question_id="q",
        question="?",
        gold_answer="1",
        prompt_ids=[1],
        tool_calls=[ToolCall("print(1)", ok, "1" if ok else "Error", (0, 0), (0, 0)) for ok in calls],
        final_answer=answer,
        metadata={"name": name},
    )


@pytest.mark.parametrize(
    "raw, key",
    [
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\tfrac 1 2", "\\frac12"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("3.0", "3"),
        ("12.00", "12"),
        ("0.05", "0.05"),
        ("3.50", "3.50"),
        ("$x + 1$", "x+1"),
        ("\\boxed{7}", "7"),
        ("\\text{(B)}", "(B)"),
        ("\\frac{a}{b}", "\\frac{a}{b}"),
        ("{1}+{2}", "{1}+{2}"),
        ("  ", None),
        (None, None),
    ],
)
def test_vote_key(raw, key):
    assert vote_key(raw) == key


def test_exec_pass_rate():
    assert exec_pass_rate(traj("1", (True, False, True, True))) == 0.75
    assert exec_pass_rate(traj("1", (False,))) == 0.0
    assert exec_pass_rate(traj("1")) is None


def test_majority_vote_normalises_and_prefers_first_on_ties():
    records = [
        traj("2", name="a"),
        traj("\\dfrac{1}{2}", name="b"),
        traj("\\frac{1}{2}", name="c"),
        traj("2.0", name="d"),
    ]
    # "2" x2 and "1/2" x2: tie, the answer seen first wins, and its first record is returned
    assert majority_vote(records).metadata["name"] == "a"
    records.append(traj(" \\frac{1}{2} ", name="e"))
    assert majority_vote(records).metadata["name"] == "b"


def test_majority_vote_ignores_missing_answers_unless_all_missing():
    assert majority_index([traj(None), traj(None), traj("5")]) == 2
    assert majority_index([traj(None), traj(None)]) == 0


def test_majority_vote_through_an_equivalence_function():
    records = [traj("0.5"), traj("1/3"), traj("\\frac{1}{2}")]
    assert majority_index(records) == 0  # three distinct strings: first wins
    same = lambda a, b: {a, b} <= {"0.5", "\\frac{1}{2}"}  # noqa: E731 - stands in for grading.answers_equivalent
    assert answer_groups([r.final_answer for r in records], same) == [[0, 2], [1]]
    assert majority_index(records, same) == 0


def test_best_of_n_picks_highest_pass_rate():
    records = [
        traj("1", (True, False), "half"),
        traj("2", (True, True, True), "all"),
        traj("3", (True,) * 3 + (False,), "most"),
    ]
    assert best_of_n_exec(records).metadata["name"] == "all"


def test_pass_rate_is_a_fraction_not_a_count():
    records = [traj("1", (True,) * 3 + (False,) * 3, "three of six"), traj("2", (True,), "one of one")]
    assert best_of_n_exec_index(records) == 1


def test_no_calls_rank_below_any_successful_call():
    records = [traj("7", (), "no calls"), traj("8", (False, False, True), "one third")]
    assert best_of_n_exec(records).metadata["name"] == "one third"


def test_the_authors_no_call_score_ties_a_code_free_answer_with_all_calls_working():
    records = [traj("7", (), "no calls"), traj("8", (False, False, True), "one third"), traj("9", (True,), "all")]
    assert exec_score(records[0]) == 0.0 and exec_score(records[0], no_call_score=1.0) == 1.0
    assert exec_score(records[1], no_call_score=1.0) == pytest.approx(1 / 3)  # only a record without calls moves
    assert best_of_n_exec(records[:2], no_call_score=1.0).metadata["name"] == "no calls"
    # tied at 1.0 with "all": majority vote among the tied (1 vs 1), then the first
    assert best_of_n_exec(records, no_call_score=1.0).metadata["name"] == "no calls"
    assert best_of_n_exec(records).metadata["name"] == "all"  # ours: no calls scores 0
    more = records + [traj("9", (True, True), "all again")]
    assert best_of_n_exec(more, no_call_score=1.0).metadata["name"] == "all"  # "9" has two votes among the tied


def test_ties_go_to_majority_among_the_tied_then_first():
    records = [
        traj("5", (True,), "t1"),
        traj("6", (True, True), "t2"),
        traj("6", (True,), "t3"),
        traj("5", (False,), "low"),  # votes for 5 but is not tied: must not count
        traj("5", (False,), "low"),
    ]
    assert best_of_n_exec(records).metadata["name"] == "t2"
    # all tied at rate 0 (no calls or all failed): plain majority vote, then first
    assert best_of_n_exec([traj("4"), traj("9", (False,)), traj("9")]).final_answer == "9"
    assert best_of_n_exec_index([traj("4"), traj("9")]) == 0


def test_empty_input_is_an_error():
    with pytest.raises(ValueError):
        best_of_n_exec([])
    with pytest.raises(ValueError):
        majority_vote([])
