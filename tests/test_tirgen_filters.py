"""TIRGen's filter rules on crafted records, the funnel, the seeded choice and the rebalancing."""

from __future__ import annotations

import pytest

from thor_core.record import ToolCall, Trajectory
from thor_core.tirgen import filters as f


def record(
    qid="q", sample=0, text="so \\boxed{4}", correct=True, codes=("import math\nprint(math.pi)",), ok=True, **meta
):
    calls = [ToolCall(code=c, success=ok, observation="x", code_span=(0, 0), output_span=(0, 0)) for c in codes]
    return Trajectory(
        question_id=qid,
        question="?",
        gold_answer="4",
        prompt_ids=[1],
        tool_calls=calls,
        completion_text=text,
        correct=correct,
        metadata={"sample": sample, "tirgen": meta},
    )


@pytest.mark.parametrize(
    "text, ok",
    [
        ("so \\boxed{4}", True),
        ("so \\boxed{ }", False),  # the authors' pattern missed this one
        ("so \\boxed{}", False),
        ("no box at all", False),
        ("\\boxed{3} then \\boxed{ }", False),  # the last box is the answer
        ("\\boxed{\\frac{1}{2}}", True),
    ],
)
def test_nonempty_boxed(text, ok):
    assert f.nonempty_boxed(text) is ok


@pytest.mark.parametrize(
    "text, ok",
    [("$x$ and $y$", True), ("$x$ and $y", False), ("costs \\$5 and $x$", True), ("$$x^2$$", True), ("", True)],
)
def test_balanced_dollars(text, ok):
    assert f.balanced_dollars(text) is ok


def test_no_repetition():
    unit = "abcdefghijklmnopqrst"  # 20 characters
    assert f.no_repetition(unit * 20)
    assert not f.no_repetition(unit * 22)
    assert f.no_repetition("varied text " * 3)


@pytest.mark.parametrize(
    "code, nontrivial",
    [
        ("print(2 + 3)", False),
        ("x = 12 * 13\nprint(x)", False),
        ("import math\nprint(math.comb(8, 3))", True),
        ("print(sum(i for i in range(10)))", True),
        ("for i in range(3):\n    print(i)", True),
        ("if 3 > 2:\n    print(1)", True),
        ("print(sp.factorint(12))", True),  # a library call on a name the session already holds
        ("def f(:", False),
    ],
)
def test_block_is_nontrivial(code, nontrivial):
    assert f.block_is_nontrivial(code) is nontrivial


def test_nontrivial_code_rules():
    short, long = "print(1)", "\n".join(f"a{i} = {i}" for i in range(6)) + "\nprint(a0)"
    assert f.nontrivial_code(["print(1)", "import math\nprint(math.e)"], "paper")
    assert not f.nontrivial_code(["print(1)", "print(2)"], "paper")
    assert f.nontrivial_code([long, long, short], "authors")  # 1/3 short <= 40%
    assert not f.nontrivial_code([long, short], "authors")  # 1/2 short > 40%
    assert f.nontrivial_code([], "off") and not f.nontrivial_code([], "paper")
    with pytest.raises(ValueError, match="paper"):
        f.nontrivial_code(["x"], "strict")


def test_funnel_counts_each_stage_in_order():
    attempts = [
        record("a", 0),
        record("a", 1, dropped="critic_code_failed"),
        record("b", 0, correct=False),
        record("c", 0, ok=False),
        record("d", 0, text="\\boxed{ }"),
        record("e", 0, text="$x \\boxed{4}"),
        record("f", 0, text=("abcdefghijklmnopqrst" * 25) + "\\boxed{4}"),
        record("g", 0, codes=()),
        record("h", 0, codes=("print(4)",)),
        record("i", 0),
        record("i", 1),
    ]
    kept, funnel = f.select(attempts, f.FilterConfig(one_call_keep=1.0))
    assert [row["samples"] for row in funnel] == [11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 2]
    assert [row["stage"] for row in funnel][1:9] == [name for name, _ in f.rules(f.FilterConfig())]
    assert sorted(r.question_id for r in kept) == ["a", "i"]


def test_one_per_question_and_rebalancing_are_seeded_and_order_free():
    two_calls = ("import math\nprint(1)", "import math\nprint(2)")
    attempts = [record(f"q{i}", s) for i in range(20) for s in range(3)] + [record("z", 0, codes=two_calls)]
    cfg = f.FilterConfig(one_call_keep=0.5, seed=3)
    kept, funnel = f.select(attempts, cfg)
    again, _ = f.select(list(reversed(attempts)), cfg)
    assert [(r.question_id, r.metadata["sample"]) for r in kept] == [
        (r.question_id, r.metadata["sample"]) for r in again
    ]
    assert funnel[-2]["samples"] == 21 and funnel[-1]["samples"] == 11  # half of 20 one-call samples, plus z
    assert any(r.question_id == "z" for r in kept)
    assert len({r.metadata["sample"] for r in kept}) > 1  # the choice is not always the first sample
    other, _ = f.select(attempts, f.FilterConfig(one_call_keep=0.5, seed=4))
    assert {r.question_id for r in other} != {r.question_id for r in kept}
