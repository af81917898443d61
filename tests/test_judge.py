"""The LLM answer judge (``thor_core/evaluation/judge.py``) without a server: the strict verdict parser, Cohen's kappa
and the agreement with math-verify on hand-made rows, and re-grading a records file shaped like the runner's with a
scripted judge (each distinct answer asked once, unparsed and missing answers counted apart, ``judge-<tag>.json``).
The judge against a real OpenAI-compatible server is in tests/test_backend_openai.py (it shares that server)."""

from __future__ import annotations

import json
import re
import socket

import pytest

from thor_core.backends.openai import ServerUnavailable
from thor_core.backends.scripted import ScriptedBackend
from thor_core.evaluation import judge
from thor_core.evaluation.judge import EQUIVALENT, NO_ANSWER, NOT_EQUIVALENT, UNPARSED, JudgeSettings
from thor_core.models import DEFAULT_MODEL
from thor_core.record import Trajectory, write_jsonl
from thor_core.stats import wilson_interval


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("Both are one half.\nVERDICT: EQUIVALENT", EQUIVALENT),
        ("They differ.\n\n**VERDICT: NOT EQUIVALENT**\n", NOT_EQUIVALENT),
        ("`verdict: not_equivalent.`", NOT_EQUIVALENT),
        ("<think>VERDICT: EQUIVALENT</think>\nOn reflection they differ.\nVERDICT: NOT EQUIVALENT", NOT_EQUIVALENT),
        ("<think>still comparing the two answers", UNPARSED),  # the budget ran out mid-thought
        ("VERDICT: EQUIVALENT\nActually, wait.", UNPARSED),  # the verdict must be the last line
        ("The answers are equivalent. VERDICT: EQUIVALENT", UNPARSED),  # a line of its own
        ("VERDICT: EQUIVALENT or NOT EQUIVALENT", UNPARSED),
        ("VERDICT: MAYBE", UNPARSED),
        ("Equivalent", UNPARSED),
        ("", UNPARSED),
    ],
)
def test_parse_verdict_is_strict(reply, verdict):
    assert judge.parse_verdict(reply) == verdict


def test_cohen_kappa():
    assert judge.cohen_kappa(40, 5, 10, 45) == pytest.approx(0.7)  # p_o 0.85, p_e 0.45*0.5 + 0.55*0.5 = 0.5
    assert judge.cohen_kappa(25, 25, 25, 25) == pytest.approx(0.0)  # chance level
    assert judge.cohen_kappa(5, 0, 0, 5) == pytest.approx(1.0)
    assert judge.cohen_kappa(0, 5, 5, 0) == pytest.approx(-1.0)
    assert judge.cohen_kappa(10, 0, 0, 0) is None  # one label only: chance agreement is 1
    assert judge.cohen_kappa(0, 0, 0, 0) is None
    with pytest.raises(ValueError, match="counts"):
        judge.cohen_kappa(1, -1, 0, 0)


def test_agreement_leaves_unparsed_and_missing_answers_out_of_the_comparison():
    def row(qid, mv, verdict):
        return {"question_id": qid, "sample": 0, "reference": "1", "answer": "1", "math_verify": mv, "judge": verdict}

    rows = [
        row("a", True, EQUIVALENT),
        row("b", True, EQUIVALENT),
        row("c", False, NOT_EQUIVALENT),
        row("d", True, NOT_EQUIVALENT),
        row("e", False, EQUIVALENT),
        row("f", True, UNPARSED),
        row("g", False, NO_ANSWER),
    ]
    a = judge.agreement(rows)
    assert a["answers"] == 7 and a["compared"] == 5 and a["math_verify_right"] == 4
    assert a["verdicts"] == {EQUIVALENT: 3, NOT_EQUIVALENT: 2, UNPARSED: 1, NO_ANSWER: 1}
    assert a["table"] == {"both_right": 2, "math_verify_only": 1, "judge_only": 1, "both_wrong": 1}
    assert a["agreed"] == 3 and a["agreement_rate"] == pytest.approx(3 / 5)
    assert a["agreement_ci95"] == list(wilson_interval(3, 5))
    assert a["cohen_kappa"] == pytest.approx(judge.cohen_kappa(2, 1, 1, 1))
    assert [(d["question_id"], d["math_verify"], d["judge"]) for d in a["disagreements"]] == [
        ("d", True, NOT_EQUIVALENT),
        ("e", False, EQUIVALENT),
    ]
    empty = judge.agreement([row("f", True, UNPARSED)])
    assert empty["compared"] == 0 and empty["agreement_rate"] is None and empty["cohen_kappa"] is None
    with pytest.raises(ValueError, match="unknown judge verdict"):
        judge.agreement([row("x", True, "yes")])


# (question id, sample, reference, extracted answer, math-verify's verdict, the scripted judge's reply)
ANSWERS = [
    ("q1", 0, "\\frac{1}{2}", "0.5", True, "Both are one half.\nVERDICT: EQUIVALENT"),
    ("q1", 1, "\\frac{1}{2}", "0.5", True, "Both are one half.\nVERDICT: EQUIVALENT"),  # asked once
    ("q2", 0, "3", "4", False, "VERDICT: NOT EQUIVALENT"),
    ("q3", 0, "(1,2)", "\\{1,2\\}", True, "A pair is not a set.\nVERDICT: NOT EQUIVALENT"),
    ("q4", 0, "10", "10 apples", False, "Units aside, the same.\nVERDICT: EQUIVALENT"),
    ("q5", 0, "7", "7", True, "I think so."),
    ("q6", 0, "2", None, False, None),  # no \boxed{}: never sent
]


def write_records(path, answers=ANSWERS):
    """Graded records as ``runner.evaluate`` writes them (``records-<tag>.jsonl``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [
        Trajectory(
            question_id=qid,
            question=f"Problem {qid}: find the value.",
            gold_answer=reference,
            prompt_ids=[1, 2],
            completion_text="" if answer is None else f"so \\boxed{{{answer}}}",
            final_answer=answer,
            correct=mv,
            metadata={"sample": sample, "benchmark": "math500_mmath"},
        )
        for qid, sample, reference, answer, mv, _ in answers
    ]
    write_jsonl(records, path)
    return path


def scripted_judge(tokenizer) -> ScriptedBackend:
    replies = {answer: reply for *_, answer, _mv, reply in ANSWERS if answer is not None}

    def respond(context: str) -> str:
        answer = re.findall(r"Candidate answer: (.*?)<\|im_end\|>", context, re.S)[-1]
        return replies[answer] + "<|im_end|>"

    return ScriptedBackend(tokenizer, respond)


def test_judge_records_with_a_scripted_judge(qwen_tokenizer, tmp_path):
    path = write_records(tmp_path / "T1" / "records-tir.jsonl")
    backend = scripted_judge(qwen_tokenizer)
    settings = JudgeSettings(base_url="http://judge.invalid/v1", model="scripted", concurrency=2)

    assert judge.find_records(tmp_path) == [path]
    results = judge.judge_records([path], backend, settings, progress=False)

    assert len(backend.requests) == 5  # q1's two samples share one question; q6 has no answer
    assert all(r.max_new_tokens == settings.max_new_tokens and r.sampling.temperature == 0 for r in backend.requests)
    prompt = qwen_tokenizer.decode(backend.requests[0].ids)
    assert judge.JUDGE_SYSTEM_PROMPT in prompt and "Reference answer: \\frac{1}{2}" in prompt
    saved = json.loads((tmp_path / "T1" / "judge-tir.json").read_text())
    assert saved == json.loads(json.dumps(results[path]))
    assert [a["judge"] for a in saved["answers"]] == [
        EQUIVALENT, EQUIVALENT, NOT_EQUIVALENT, NOT_EQUIVALENT, EQUIVALENT, UNPARSED, NO_ANSWER,
    ]  # fmt: skip
    assert saved["answers"][5]["judge_reply"] == "I think so."
    assert saved["judge"]["prompt_sha256"] == judge.PROMPT_SHA256 and "api_key" not in saved["judge"]
    a = saved["agreement"]
    assert a["verdicts"] == {EQUIVALENT: 3, NOT_EQUIVALENT: 2, UNPARSED: 1, NO_ANSWER: 1}
    assert a["compared"] == 5 and a["agreed"] == 3
    assert [(d["question_id"], d["reference"], d["answer"]) for d in a["disagreements"]] == [
        ("q3", "(1,2)", "\\{1,2\\}"),
        ("q4", "10", "10 apples"),
    ]
    markdown = judge.judge_markdown(results, root=tmp_path)
    assert "| T1/records-tir.jsonl | 7 | 5 | 1 | 1 | 4 | 3 | 60.0% [" in markdown
    assert "| q3 | 0 | (1,2) | \\{1,2\\} | True | not_equivalent |" in markdown


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no records"):
        judge.find_records(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        judge.find_records(tmp_path / "missing")
    ungraded = tmp_path / "records-cot.jsonl"
    ungraded.write_text(json.dumps({"question_id": "q", "question": "?", "gold_answer": "1", "correct": None}) + "\n")
    with pytest.raises(ValueError, match="record 1 has no grade"):
        judge.read_answers(ungraded)
    with pytest.raises(ValueError, match="records-<tag>.jsonl"):
        judge.judge_path(tmp_path / "summary-tir.json")
    with pytest.raises(ValueError, match="base_url.*concurrency"):
        JudgeSettings(base_url="", model="m", concurrency=0)


def test_a_down_judge_server_stops_the_run_naming_its_url(tmp_path):
    write_records(tmp_path / "records-tir.jsonl")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    with pytest.raises(ServerUnavailable, match=re.escape(f"{url}/v1")):
        judge.judge_run(tmp_path, JudgeSettings(base_url=url, model=DEFAULT_MODEL), progress=False)
    assert not (tmp_path / "judge-tir.json").exists()
