"""The held-out step-level check (thor_core.rl.step_check): prefixes, the paired tests, a real run and its reuse."""

import json

import pytest
from rl_scripted import trajectory_from_pieces

from thor_core.models import TINY_MODEL
from thor_core.record import ToolCall, Trajectory
from thor_core.rl import step_check as sc
from thor_core.rl.config import RLParams
from thor_core.stats import mcnemar_exact


def _answer(tok, pieces, qid="q", sample=0):
    """A held-out answer from (text, kind) pieces (``rl_scripted.trajectory_from_pieces``)."""
    prompt = tok.encode("Compute 6 * 7 with Python and box the answer.\n", add_special_tokens=False)
    return trajectory_from_pieces(tok, pieces, question_id=qid, question="Compute 6 * 7.", gold_answer="42",
                                  prompt_ids=prompt, logprobs=None, final_answer=None, metadata={"sample": sample})  # fmt: skip


def _answers(tok):
    fail = ("```python\nprint(x * 7)\n```\n", "fail")
    out = ("```output\nNameError: name 'x' is not defined\n```\n", "output")
    ok, ok_out = ("```python\nprint(6 * 7)\n```\n", "ok"), ("```output\n42\n```\n", "output")
    lead = ("We multiply the two numbers with a short program.\n", "policy")
    return [
        _answer(tok, [lead, fail, out], "a"),
        _answer(tok, [lead, ok, ok_out, ("Check it once more.\n", "policy"), fail, out], "b", sample=1),
        _answer(tok, [lead, ok, ok_out, ("So \\boxed{42}.", "policy")], "c"),  # no failed call
    ]


def test_prefixes_are_the_failed_calls_by_the_training_rule(qwen_tokenizer):
    answers = _answers(qwen_tokenizer)
    q = sc.check_params(RLParams(step_prefixes="per_rollout"), n=8, k=2, seed=0)
    picks = sc.heldout_prefixes(answers, q)
    assert [(r.question_id, i) for r, i in picks] == [("a", 0), ("b", 1)]
    assert all(r.metadata["group"] == f"h/{r.question_id}" for r, _ in picks)
    capped = sc.heldout_prefixes(answers, sc.check_params(RLParams(), n=1, k=2, seed=0))
    assert len(capped) == 1 and capped == sc.heldout_prefixes(answers, sc.check_params(RLParams(), n=1, k=2, seed=0))


def _continuation(group, sample, passed):
    calls = [ToolCall("print(1)", passed, "1", (0, 1), (1, 2))]
    return Trajectory("q", "Q", "1", [1], [5, 6], [1, 0], None, calls, finish_reason="code_executed",
                      metadata={"group": group, "sample": sample, "prefix_calls": 0})  # fmt: skip


def test_summary_counts_pairs_and_prefixes_as_by_hand():
    outcomes = {  # prefix -> (start's k passes, RL's k passes)
        "A": ([1, 0, 0, 0], [1, 1, 1, 0]),  # better
        "B": ([1, 1, 0, 0], [0, 1, 0, 0]),  # worse
        "C": ([0, 0, 0, 0], [0, 0, 0, 0]),  # tied
        "D": ([0, 0, 1, 0], [0, 1, 1, 1]),  # better
    }
    by_tag = {
        tag: [_continuation(g, j, bool(v[side][j])) for g, v in outcomes.items() for j in range(4)]
        for side, tag in enumerate(("start", "rl"))
    }
    report = sc.summarize(by_tag, {"x": 1})
    assert report["rates"]["start"]["passed"] == 4 and report["rates"]["rl"]["passed"] == 7
    assert report["rates"]["rl"]["n"] == 16 and report["rates"]["rl"]["rate"] == 7 / 16
    pairs = report["pairs"]
    assert (pairs["both"], pairs["only_first"], pairs["only_second"], pairs["neither"]) == (3, 1, 4, 8)
    assert pairs["p_value"] == pytest.approx(mcnemar_exact(1, 4)) == pytest.approx(0.375)  # 2 * (1 + 5) / 32
    assert report["prefixes"] == {"n": 4, "better": 2, "worse": 1, "tied": 1, "p_value": 1.0}
    table = sc.step_check_table(report)
    assert "25.0% (4/16)" in table and "43.8% (7/16)" in table and "2 better, 1 worse, 1 tied" in table
    one_failed = by_tag["rl"][0]
    one_failed.finish_reason = "length"  # no block ended the continuation: not a pass
    assert sc.summarize(by_tag, {})["rates"]["rl"]["passed"] == 6


@pytest.mark.model
def test_both_models_continue_the_same_prefixes_and_a_rerun_reuses_them(tiny, sandbox, tmp_path):
    """Real generation (the tiny random Qwen on the hf backend: mechanics) and execution; the same weights twice give
    the same outcomes."""
    _, tok = tiny
    answers = _answers(tok)
    name = TINY_MODEL
    p = RLParams(backend="hf", temperature=1.0, suffix_tokens=4, step_max_new_tokens=24)
    models = {"start": name, "rl": name}
    report = sc.step_check(p, models, answers, tmp_path, sandbox, n=8, k=2, seed=3)
    for tag in models:
        records = report["records"][tag]
        assert len(records) == 4 and report["rates"][tag]["n"] == 4
        for r in records:
            prefix_len = r.metadata["loss_start"]
            source = next(a for a in answers if a.question_id == r.question_id)
            assert r.completion_ids[:prefix_len] == source.completion_ids[:prefix_len]
            assert prefix_len == source.tool_calls[r.metadata["from_call"]].code_span[0] - 4
    assert report["pairs"]["only_first"] == report["pairs"]["only_second"] == 0  # same weights, same seeds
    written = json.loads((tmp_path / sc.RESULT).read_text())
    assert written["settings"]["model_sha256"]["start"] == written["settings"]["model_sha256"]["rl"]
    assert (tmp_path / "step-check-rl.jsonl").is_file()
    again = sc.step_check(p, models, answers, tmp_path, None, n=8, k=2, seed=3)  # no sandbox: nothing is rerun
    assert again["rates"] == written["rates"] and len(again["records"]["rl"]) == 4
    with pytest.raises(ValueError, match="no sandbox"):  # other settings: a new check, which needs the sandbox
        sc.step_check(p, models, answers, tmp_path, None, n=8, k=3, seed=3)
