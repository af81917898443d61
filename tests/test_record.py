import json

import pytest

from thor_core.record import Correction, ToolCall, Trajectory, read_jsonl, write_jsonl


def make_record(i=0):
    return Trajectory(
        question_id=f"q{i}",
        question="What is 2+2?",
        gold_answer="4",
        prompt_ids=[1, 2, 3],
        completion_ids=[10, 11, 12, 13, 14, 15],
        mask=[1, 1, 0, 0, 1, 1],
        logprobs=[-0.1, -0.2, None, None, -0.3, -0.4],
        tool_calls=[ToolCall(code="print(2+2)", success=True, observation="4", code_span=(0, 2), output_span=(2, 4))],
        corrections=[Correction(at_token=0, dropped_text="x", code="1/0", observation="ZeroDivisionError")],
        completion_text="...",
        final_answer="4",
        correct=True,
        finish_reason="eos",
        metadata={"sample": i, "nested": {"a": [1, 2]}},
    )


def test_jsonl_round_trip(tmp_path):
    records = [make_record(i) for i in range(3)]
    records[1].logprobs = None
    records[2].correct = None
    write_jsonl(records, tmp_path / "r.jsonl")
    assert read_jsonl(tmp_path / "r.jsonl") == records


def test_torn_last_line_is_skipped_but_torn_middle_line_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    write_jsonl([make_record(0), make_record(1)], path)
    with path.open("a") as f:
        f.write('{"question_id": "q2", "quest')  # a writer killed mid-line
    assert [r.question_id for r in read_jsonl(path)] == ["q0", "q1"]
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mask": [1, 1]}, "mask has 2 entries"),
        ({"logprobs": [0.0]}, "logprobs has 1"),
        ({"mask": [1, 1, 2, 0, 1, 1]}, "0 or 1"),
        ({"finish_reason": "bogus"}, "finish_reason"),
    ],
)
def test_invariants_are_checked(change, message):
    d = make_record().to_dict()
    d.update(change)
    with pytest.raises(ValueError, match=message):
        Trajectory.from_dict(d)


def test_span_outside_completion_is_refused():
    d = make_record().to_dict()
    d["tool_calls"][0]["output_span"] = [2, 99]
    with pytest.raises(ValueError, match="output_span"):
        Trajectory.from_dict(d)


def test_unknown_field_is_named():
    d = json.loads(json.dumps(make_record().to_dict()))
    d["colour"] = 1
    with pytest.raises(ValueError, match="colour"):
        Trajectory.from_dict(d)
