"""Answer equivalence (thor_core.grading): the equivalence table, boxed-answer
extraction, and the process pool's wall-clock limit (threads, kills, order)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from thor_core.grading import (
    Grader,
    GraderError,
    GradeResult,
    answers_equivalent,
    grade_trajectories,
    normalize_answer,
)
from thor_core.record import Trajectory

# sympy evaluates this factorial eagerly and never returns (with little memory).
PATHOLOGICAL = "99999999999!"

# (gold, prediction, equivalent?)
TABLE = [
    # fractions vs decimals
    (r"\frac{1}{2}", "0.5", True),
    (r"\frac{3}{4}", "0.75", True),
    (r"-\frac{1}{2}", "-0.5", True),
    (r"\frac{1}{3}", "0.333", False),  # floats must agree to 6 decimals
    ("1/3", "0.3333333", True),
    ("6", r"\frac{12}{2}", True),
    # \frac vs \dfrac / \tfrac / shorthand
    (r"\frac{3}{4}", r"\dfrac{3}{4}", True),
    (r"\dfrac{2}{3}", r"\tfrac{2}{3}", True),
    (r"\frac12", r"\frac{1}{2}", True),
    # sets (order free) and tuples (order matters)
    (r"\{1,2,3\}", r"\{3,1,2\}", True),
    (r"\{1,2\}", r"\{1,3\}", False),
    ("2, -3", "-3, 2", True),
    ("(1, 2, 3)", "(1,2,3)", True),
    ("(1,2,3)", "(3,2,1)", False),
    ("(1,2)", "(2,1)", False),
    (r"(- \frac{159}{98}, - \frac{57}{49})", "(-159/98, -57/49)", True),
    # intervals
    (r"[0, \infty)", r"[0,\infty)", True),
    (r"[0, \infty)", r"(0, \infty)", False),
    (r"(-\infty, 2]", r"(-\infty,2]", True),
    ("(1, 5)", "(1, 5]", False),
    (r"[-\frac{1}{4}, 0) \cup (0, 2)", r"[-0.25,0)\cup(0,2)", True),
    # degrees
    (r"30^\circ", "30", True),
    ("30", r"30^{\circ}", True),
    (r"45^\circ", r"60^\circ", False),
    # \text{} and units
    (r"10 \text{ cm}", "10", True),
    ("12", r"12\text{ apples}", True),
    (r"5\text{ dollars}", "6", False),
    (r"\$1.50", "1.5", True),
    (r"\text{Evelyn}", "Evelyn", True),
    (r"\text{(C)}", "C", True),
    (r"\text{(C)}", r"\text{(B)}", False),
    # percentages
    (r"10\%", "10", True),
    (r"10\%", "0.1", True),
    (r"25\%", r"30\%", False),
    # radicals
    (r"3\sqrt{2}", r"\sqrt{18}", True),
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", True),
    (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}", True),
    (r"2\sqrt{3}", r"3\sqrt{2}", False),
    # negatives
    ("-5", "-5", True),
    ("-5", "5", False),
    (r"-\frac{3}{4}", r"\frac{-3}{4}", True),
    (r"\infty", r"-\infty", False),
    # thousands separators
    ("1,000", "1000", True),
    ("1,000,000", "1000000", True),
    ("1{,}000", "1000", True),
    ("12,345.6", "12345.6", True),
    ("1,000", "100", False),
    # expressions, equations, powers, matrices
    ("x^2+2x+1", "(x+1)^2", True),
    ("x=3", "3", True),
    ("10^{6}", "1000000", True),
    (r"\pi", "3.14159", False),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}", False),
    # wrappers and malformed predictions
    ("7", "$7$", True),
    ("7", r"\boxed{7}", True),
    ("2", r"\boxed{1} or rather \boxed{2}", True),
    ("3", r"\frac{3}{", False),
    ("3", "", False),
    ("3", "   ", False),
]


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=2, timeout_s=10) as g:
        yield g


def test_table_is_large_and_mixed():
    assert len(TABLE) >= 40
    assert {expected for _, _, expected in TABLE} == {True, False}


@pytest.mark.parametrize(("gold", "pred", "expected"), TABLE, ids=[f"{g}|{p}" for g, p, _ in TABLE])
def test_equivalence_table(grader, gold, pred, expected):
    result = grader.grade(gold, pred)
    assert not result.timed_out and result.error is None
    assert result.correct is expected


def test_known_math_verify_leniencies(grader):
    """Kept on purpose (documented in grading.py); this test flags a math-verify upgrade that changes them."""
    assert grader.grade("5", r"5\%").correct  # percentages match either way
    assert grader.grade("(1,2)", r"\{1,2\}").correct  # (1,2) is an open interval, equal to the set here


# ------------------------------------------------------------ completions

COMPLETIONS = [
    # (gold, completion, extracted answer, correct)
    ("2", r"First \boxed{1}, but on reflection the answer is \boxed{2}.", "2", True),
    ("1", r"First \boxed{1}, but on reflection the answer is \boxed{2}.", "2", False),
    (r"\frac{1}{2}", r"So $x = \boxed{\dfrac{1}{2}}$.", r"\dfrac{1}{2}", True),
    ("3", r"the answer is \boxed{3} and then \boxed{}", "3", True),  # an empty box is no answer
    ("3", r"the answer is \boxed{}", None, False),
    ("3", r"the answer is \boxed{3", None, False),  # unbalanced box
    ("3", "the answer is 3", None, False),  # no box: incorrect even if the text is right
    ("(1,2)", r"\fbox{(1, 2)}", "(1, 2)", True),
]


@pytest.mark.parametrize(("gold", "text", "answer", "correct"), COMPLETIONS)
def test_grade_completion_uses_last_box(grader, gold, text, answer, correct):
    result = grader.grade_completion(gold, text)
    assert (result.answer, result.correct) == (answer, correct)


def test_grade_trajectories_fills_records(grader):
    records = [
        Trajectory("q1", "1+1?", "2", prompt_ids=[], completion_text=r"so \boxed{2}"),
        Trajectory("q2", "2+2?", "4", prompt_ids=[], completion_text=r"so \boxed{5}"),
        Trajectory("q3", "3+3?", "6", prompt_ids=[], completion_text="no box"),
        Trajectory("q4", "unlabelled", None, prompt_ids=[], completion_text=r"\boxed{7}"),
    ]
    results = grade_trajectories(records, grader=grader)
    assert [r.final_answer for r in records] == ["2", "5", None, "7"]
    assert [r.correct for r in records] == [True, False, False, None]
    assert [r.correct for r in results] == [True, False, False, False]


def test_normalize_answer():
    assert normalize_answer(r"$\frac12$") == r"$\boxed{\frac12}$"
    assert normalize_answer(r"\[ x \]") == r"$\boxed{x}$"
    assert normalize_answer(r"\boxed{1} and \boxed{2}") == r"$\boxed{2}$"
    assert normalize_answer("  ") == ""


def test_bad_arguments_fail_clearly(grader):
    with pytest.raises(ValueError, match="gold answer must be a non-empty string"):
        grader.grade("", "1")
    with pytest.raises(ValueError, match="fork"):
        Grader(start_method="fork")
    with pytest.raises(ValueError, match="at least one worker"):
        Grader(workers=0)


# ------------------------------------------------------ time limit, pool


def test_pathological_input_is_killed_from_a_thread(grader):
    before = grader.stats()
    out = []
    thread = threading.Thread(target=lambda: out.append(grader.grade("3", PATHOLOGICAL, timeout_s=1.0)))
    start = time.monotonic()
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - start < 10
    assert out == [GradeResult(PATHOLOGICAL, correct=False, timed_out=True)]
    after = grader.stats()
    assert after["timeouts"] == before["timeouts"] + 1 and after["replaced"] == before["replaced"] + 1
    assert grader.grade(r"\frac{1}{2}", "0.5").correct  # the replacement works


def test_module_level_api_works_off_the_main_thread():
    out = {}

    def work():
        out["slow"] = answers_equivalent(PATHOLOGICAL, "1", timeout_s=1.0)
        out["fast"] = answers_equivalent("1,000", "1000")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert out == {"slow": False, "fast": True}


# A test-only job for the workers: "sleep"/<seconds> sleeps, "crash" kills the worker.
def _scripted_job(gold: str, pred: str) -> bool:
    if gold == "sleep":
        time.sleep(float(pred))
        return True
    if gold == "crash":
        os._exit(3)
    return gold == pred


class ScriptedGrader(Grader):
    _job = staticmethod(_scripted_job)


@pytest.fixture
def scripted():
    with ScriptedGrader(workers=2, timeout_s=0.5) as g:
        yield g


def _children() -> set[int]:
    return {p.pid for p in multiprocessing.active_children()}


def test_overrun_kills_and_replaces_the_worker(scripted):
    scripted.grade("a", "a")  # both workers started
    scripted.grade("b", "b")
    before = _children()
    start = time.monotonic()
    result = scripted.grade("sleep", "30")
    assert result.timed_out and not result.correct
    assert time.monotonic() - start < 5
    after = _children()
    assert len(before - after) == 1 and len(after - before) == 1  # one killed, one new
    assert all(scripted.grade("x", "x").correct for _ in range(4))
    assert scripted.stats()["replaced"] == 1


def test_crashed_worker_is_an_error_result_and_replaced(scripted):
    result = scripted.grade("crash", "1")
    assert not result.correct and not result.timed_out and "died" in result.error
    assert scripted.grade("y", "y").correct
    assert scripted.stats()["replaced"] == 1


def test_batch_keeps_input_order(scripted):
    pairs = [("sleep", "0.3"), ("a", "a"), ("sleep", "0.05"), ("b", "c"), ("sleep", "2"), ("d", "d")]
    results = scripted.grade_batch(pairs)
    assert [r.answer for r in results] == [p for _, p in pairs]
    assert [r.correct for r in results] == [True, True, True, False, False, True]
    assert [r.timed_out for r in results] == [False, False, False, False, True, False]


def test_many_threads_share_the_pool(scripted):
    results = [None] * 12

    def work(i):
        results[i] = scripted.grade(str(i), str(i) if i % 3 else "other")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.correct for r in results] == [bool(i % 3) for i in range(12)]


def test_closed_grader_refuses_work():
    g = ScriptedGrader(workers=1)
    g.close()
    with pytest.raises(GraderError, match="closed"):
        g.grade("a", "a")


def _grade_in_child(results) -> None:
    results.put(answers_equivalent(r"\frac{1}{2}", "0.5"))


def test_module_level_api_works_inside_a_worker_process():
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=_grade_in_child, args=(results,))
    child.start()
    try:
        assert results.get(timeout=120) is True
    finally:
        child.join(30)
    assert child.exitcode == 0


def _use_inherited_grader(grader, results) -> None:
    try:
        grader.grade("a", "a")
    except GraderError as e:
        results.put(str(e))
    else:
        results.put("no error")


def test_a_forked_copy_refuses_the_parents_pool():
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    with ScriptedGrader(workers=1) as g:
        child = ctx.Process(target=_use_inherited_grader, args=(g, results))
        child.start()
        message = results.get(timeout=30)
        child.join(30)
        assert "create one per process" in message
        assert g.grade("a", "a").correct  # the parent's pool is untouched
