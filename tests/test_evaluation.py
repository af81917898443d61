"""Evaluation: metrics on hand-made records, resumable runs with a scripted policy,
an end-to-end TIR evaluation against the real sandbox, and HumanEval checks."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from pathlib import Path

import pytest

from thor_core.backends.scripted import ScriptedBackend
from thor_core.data.benchmarks import load_benchmark
from thor_core.engine.rollout import RolloutConfig
from thor_core.evaluation import code as eval_code
from thor_core.evaluation.code import humaneval_program
from thor_core.evaluation.metrics import best_of_n_curve, group_metrics, pass_at_k, summarize, tool_correctness_table
from thor_core.evaluation.report import pick_examples, render_trajectory
from thor_core.evaluation.runner import evaluate
from thor_core.grading import GradeResult
from thor_core.record import Correction, ToolCall, Trajectory, iter_jsonl
from thor_core.stats import chi2_sf_df1, chi_square_2x2
from thor_core.tir import last_boxed

# ------------------------------------------------------------------ metrics


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 1, 0.3),  # pass@1 = c/n
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (4, 0, 4, 0.0),
        (4, 4, 1, 1.0),
        (3, 1, 3, 1.0),  # n - c < k: some draw must hit the correct one
    ],
)
def test_pass_at_k_unbiased_estimator(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_bad_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_chi_square_reproduces_the_papers_336_3():
    chi2, p = chi_square_2x2(3950, 1549, 139, 318)
    assert round(chi2, 1) == 336.3
    assert 0 < p < 1e-70
    yates, _ = chi_square_2x2(3950, 1549, 139, 318, yates=True)
    assert round(yates, 1) != 336.3 and yates < chi2  # the paper's number is without continuity correction


def test_chi2_survival_function_df1():
    assert chi2_sf_df1(3.841458820694124) == pytest.approx(0.05, abs=1e-9)
    assert chi2_sf_df1(6.6348966010212145) == pytest.approx(0.01, abs=1e-9)
    assert chi2_sf_df1(0.0) == 1.0
    assert chi_square_2x2(5, 5, 0, 0) is None  # an empty row: undefined


def rec(qid, sample, correct, calls=(), bench="b1", tokens=(1, 1, 1), answer=None, corrections=0, timed_out=()):
    """A graded record: ``tokens`` is the mask (1 = policy token)."""
    n = len(tokens)
    return Trajectory(
        question_id=qid,
        question=f"question {qid}",
        gold_answer="1",
        prompt_ids=[0],
        completion_ids=list(range(n)),
        mask=list(tokens),
        tool_calls=[
            ToolCall("print(1)", ok, "1", (0, 0), (0, 0), timed_out=i in timed_out) for i, ok in enumerate(calls)
        ],
        corrections=[Correction(0, "x", "1/0", "ZeroDivisionError") for _ in range(corrections)],
        final_answer=answer if answer is not None else ("1" if correct else "2"),
        correct=correct,
        metadata={"sample": sample, "benchmark": bench},
    )


def hand_made() -> list[Trajectory]:
    return [
        # b1/q1: 2 samples, 1 correct
        rec("q1", 0, True, calls=(True, True), tokens=(1, 1, 0, 0, 1)),
        rec("q1", 1, False, calls=(False,), tokens=(1, 0), corrections=2, timed_out=(0,)),
        # b1/q2: 2 samples, 0 correct
        rec("q2", 0, False, calls=(True,), tokens=(1, 1, 1)),
        rec("q2", 1, False, tokens=(1,)),
        # b2/q3: 2 samples, both correct
        rec("q3", 0, True, bench="b2", calls=(True, False), tokens=(1, 1)),
        rec("q3", 1, True, bench="b2", tokens=(1, 1, 1, 1)),
    ]


def test_group_metrics_by_hand():
    m = group_metrics(hand_made()[:4], k=2)
    assert m["problems"] == 2 and m["samples"] == 4
    assert m["avg@k"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["pass@k"] == pytest.approx((1 + 0) / 2)
    assert m["mean_policy_tokens"] == pytest.approx((3 + 1 + 3 + 1) / 4)  # mask == 1 only
    assert m["calls_per_answer"] == pytest.approx(4 / 4)
    assert m["tool_success_rate"] == pytest.approx(3 / 4)
    assert m["timeout_rate"] == pytest.approx(1 / 4)
    assert m["corrections_per_answer"] == pytest.approx(2 / 4)
    assert m["attempt_success_rate"] == pytest.approx(3 / 6)
    assert m["with_calls_rate"] == pytest.approx(3 / 4)


def test_summarize_per_benchmark_overall_and_2x2():
    s = summarize(hand_made(), k=2, best_of_n=2)
    assert set(s["benchmarks"]) == {"b1", "b2"}
    assert s["benchmarks"]["b2"]["avg@k"] == 1.0
    assert s["overall"]["avg@k"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert s["macro_avg@k"] == pytest.approx((0.25 + 1.0) / 2)
    t = s[
        "tool_vs_correct"
    ]  # records with calls only: q1/0 ok+correct, q1/1 fail+wrong, q2/0 ok+wrong, q3/0 fail+correct
    assert (t["ok_correct"], t["ok_wrong"], t["fail_correct"], t["fail_wrong"], t["n"]) == (1, 1, 1, 1, 4)
    assert t["chi2"] == pytest.approx(0.0)
    assert t["p_value"] == pytest.approx(1.0)
    assert json.loads(json.dumps(s)) == s  # JSON-ready


def test_tool_table_matches_chi_square_of_its_counts():
    records = [rec(f"q{i}", 0, i % 3 == 0, calls=(i % 2 == 0,)) for i in range(30)]
    t = tool_correctness_table(records)
    assert t["chi2"] == pytest.approx(
        chi_square_2x2(t["ok_correct"], t["ok_wrong"], t["fail_correct"], t["fail_wrong"])[0]
    )


def test_best_of_n_curve_by_hand():
    # one problem, 4 samples; groups of 2: (s0, s1) and (s2, s3)
    records = [
        rec("q", 0, False, calls=(True, False), answer="5"),
        rec("q", 1, True, calls=(True,), answer="1"),  # higher pass rate: exec picks it
        rec("q", 2, False, answer="7"),  # no calls
        rec("q", 3, True, calls=(False,), answer="1"),  # rate 0 like s2: tie -> majority (1 vs 1 votes) -> first (s2)
    ]
    rows = {r["n"]: r for r in best_of_n_curve(records, 4)}
    assert rows[1]["exec_pass_rate"] == rows[1]["majority_vote"] == rows[1]["single"] == pytest.approx(0.5)
    assert rows[2]["exec_pass_rate"] == pytest.approx(0.5)  # group 1 right, group 2 wrong
    assert rows[2]["majority_vote"] == pytest.approx(0.0)  # 1-1 ties: the first sample of each group (both wrong)
    assert rows[2]["oracle"] == pytest.approx(1.0)
    assert rows[3]["exec_pass_rate"] == pytest.approx(1.0)  # one group (s0..s2): s1
    assert rows[4]["majority_vote"] == pytest.approx(1.0)  # "1" twice among rates (0.5, 1, 0, 0)
    assert rows[4]["exec_pass_rate"] == pytest.approx(1.0)
    assert summarize(records, k=4, best_of_n=None)["best_of_n"] is None
    assert summarize(records[:1], k=1, best_of_n=2)["best_of_n"] is None  # k < N
    # the authors' score for an answer without calls (1.0) changes the pick where such an answer meets calls that
    # partly failed: s0 has no calls and is right, s1 half its calls and is wrong
    pair = [rec("p", 0, True, answer="1"), rec("p", 1, False, calls=(True, False), answer="2")]
    assert best_of_n_curve(pair, 2)[1]["exec_pass_rate"] == 0.0  # ours: s1 (0.5 > 0)
    authors = best_of_n_curve(pair, 2, no_call_score=1.0)
    assert authors[1]["exec_pass_rate"] == 1.0 and authors[1]["majority_vote"] == 1.0  # s0 (1.0 > 0.5)
    assert summarize(pair, k=2, best_of_n=2, no_call_score=1.0)["best_of_n"] == authors


# ------------------------------------------------------------ scripted runs


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from thor_core.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("embedded:smollm2-135m-instruct"))


class CountingGrader:
    """Exact-string grading that counts its calls (thread-safe)."""

    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()

    def grade_completion(self, gold, text):
        with self.lock:
            self.calls += 1
        answer = last_boxed(text)
        return GradeResult(answer, answer == gold)


def answer_by_question(problems, wrong=()):
    """A CoT policy: the gold answer in a box (or a wrong one for ids in ``wrong``), then end of turn."""

    def respond(context: str) -> str:
        for p in problems:
            if p.question in context:
                return f"Thinking.\n\\boxed{{{'wrong' if p.id in wrong else p.answer}}}<|im_end|>"
        raise AssertionError("unknown question")

    return respond


def run_cot(backend, out_dir, grader, k=2, limit=2, **kw):
    return evaluate(
        backend,
        None,
        ["aime24", "aime25"],
        k,
        "cot",
        False,
        RolloutConfig(max_new_tokens=64),
        out_dir,
        limit=limit,
        best_of_n=2,
        grader=grader,
        progress=False,
        **kw,
    )


def test_evaluate_cot_writes_records_and_summaries(tokenizer, tmp_path):
    problems = load_benchmark("aime24", limit=2) + load_benchmark("aime25", limit=2)
    backend = ScriptedBackend(tokenizer, answer_by_question(problems, wrong={problems[1].id}))
    grader = CountingGrader()
    result = run_cot(backend, tmp_path, grader)
    assert grader.calls == 8 and result.summary["new"] == 8 and result.summary["resumed"] == 0
    assert [(r.question_id, r.metadata["sample"]) for r in result.records] == [
        (p.id, s) for p in problems for s in (0, 1)
    ]
    s = json.loads((tmp_path / "summary-cot.json").read_text())
    assert s["benchmarks"]["aime24"]["avg@k"] == 0.5 and s["benchmarks"]["aime25"]["avg@k"] == 1.0
    assert s["overall"]["pass@k"] == 0.75
    assert s["best_of_n"][1]["n"] == 2
    md = (tmp_path / "summary-cot.md").read_text()
    assert "| aime24 | 2 | 4 | 50.0 [" in md and "Best-of-N" in md  # Avg@k [95% bootstrap CI]
    assert {p.name for p in tmp_path.iterdir()} == {
        "records-cot.jsonl",
        "config-cot.json",
        "summary-cot.json",
        "summary-cot.md",
    }


def test_resume_after_a_torn_write_neither_reruns_nor_regrades(tokenizer, tmp_path):
    problems = load_benchmark("aime24", limit=3) + load_benchmark("aime25", limit=3)
    backend = ScriptedBackend(tokenizer, answer_by_question(problems))
    first = run_cot(backend, tmp_path, CountingGrader())
    path = first.records_path
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # killed while writing record 4
    backend.requests.clear()
    grader = CountingGrader()
    again = run_cot(backend, tmp_path, grader)
    assert grader.calls == 5 and again.summary["new"] == 5 and again.summary["resumed"] == 3
    assert again.summary["wall_s_total"] == pytest.approx(first.summary["wall_s"] + again.summary["wall_s"], abs=0.11)
    assert len(backend.requests) == 5  # one segment per CoT rollout: only the missing five ran
    keys = [(r.question_id, r.metadata["sample"]) for r in iter_jsonl(path)]
    assert len(keys) == len(set(keys)) == 8
    grader = CountingGrader()
    run_cot(backend, tmp_path, grader)  # complete: nothing to do
    assert grader.calls == 0
    more = run_cot(backend, tmp_path, grader, limit=3)  # a larger limit adds only the new problems
    assert grader.calls == 4 and more.summary["resumed"] == 8


def test_resume_after_a_crash_mid_run(tokenizer, tmp_path):
    problems = load_benchmark("aime24", limit=2) + load_benchmark("aime25", limit=2)
    good = answer_by_question(problems)

    def crashing(context):
        if problems[2].question in context:
            raise RuntimeError("killed")
        return good(context)

    with pytest.raises(RuntimeError, match="killed"):
        run_cot(ScriptedBackend(tokenizer, crashing), tmp_path, CountingGrader())
    kept = len(list(iter_jsonl(tmp_path / "records-cot.jsonl")))
    assert 0 < kept < 8
    grader = CountingGrader()
    result = run_cot(ScriptedBackend(tokenizer, good), tmp_path, grader)
    assert grader.calls == 8 - kept and result.summary["resumed"] == kept
    assert len(result.records) == 8 and all(r.correct for r in result.records)


def test_resume_refuses_other_settings(tokenizer, tmp_path):
    problems = load_benchmark("aime24", limit=1) + load_benchmark("aime25", limit=1)
    backend = ScriptedBackend(tokenizer, answer_by_question(problems))
    run_cot(backend, tmp_path, CountingGrader(), k=1, limit=1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        evaluate(
            backend,
            None,
            ["aime24"],
            1,
            "cot",
            False,
            RolloutConfig(max_new_tokens=65),
            tmp_path,
            limit=1,
            grader=CountingGrader(),
            progress=False,
        )


def test_evaluate_rejects_bad_combinations(tokenizer, tmp_path):
    backend = ScriptedBackend(tokenizer, lambda c: "x")
    with pytest.raises(ValueError, match="self-correction"):
        evaluate(backend, None, ["aime24"], 1, "cot", True, RolloutConfig(), tmp_path)
    with pytest.raises(ValueError, match="evaluate_code"):
        evaluate(backend, None, ["humaneval"], 1, "tir", False, RolloutConfig(), tmp_path)


def test_the_authors_no_call_score_resummarizes_a_run_without_sampling(tokenizer, tmp_path):
    """Notebook 04's ``no_call_score`` (and the CLI's ``--no-call-score``) reaches the summary through ``evaluate``;
    switching the rule on a finished run resumes every record: nothing sampled or graded again. (Which answer each
    rule picks is ``test_best_of_n_curve_by_hand``'s.)"""
    problems = load_benchmark("aime24", limit=2) + load_benchmark("aime25", limit=2)
    backend = ScriptedBackend(tokenizer, answer_by_question(problems))
    assert run_cot(backend, tmp_path, CountingGrader()).summary["no_call_score"] == 0.0
    backend.requests.clear()
    grader = CountingGrader()
    again = run_cot(backend, tmp_path, grader, no_call_score=1.0)
    assert grader.calls == 0 and not backend.requests and again.summary["resumed"] == 8
    assert '"no_call_score": 1.0' in again.summary_path.read_text()
    assert "scores 1 (the authors' script)" in again.markdown_path.read_text()
    with pytest.raises(ValueError, match=r"no_call_score is an execution pass rate.* got 2"):
        run_cot(backend, tmp_path, grader, no_call_score=2)


# ------------------------------------------------------------- real sandbox


@pytest.fixture(scope="module")
def sandbox():
    from thor_core.sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig()) as sb:
        yield sb


def tir_policy(problems):
    """First code attempt fails (1/0); the retry, or the output that follows, leads to the gold answer."""
    tries: dict[str, int] = {}

    def respond(context: str) -> str:
        p = next(p for p in problems if p.question in context)
        if "```output" not in context.split(p.question)[-1]:
            tries[p.id] = tries.get(p.id, 0) + 1
            code = "print(1/0)" if tries[p.id] == 1 else f"print({p.answer})"
            return f"Compute it.\n```python\n{code}\n```\n"
        return f"So the answer is \\boxed{{{p.answer}}}.<|im_end|>"

    return respond


@pytest.mark.parametrize("self_correction", [False, True])
def test_evaluate_tir_end_to_end(tokenizer, sandbox, tmp_path, self_correction):
    problems = load_benchmark("aime24", limit=2)
    backend = ScriptedBackend(tokenizer, tir_policy(problems))
    result = evaluate(
        backend,
        sandbox,
        ["aime24"],
        1,
        "tir",
        self_correction,
        RolloutConfig(max_new_tokens=200),
        tmp_path,
        grader=CountingGrader(),
        progress=False,
        limit=2,
    )
    tag = "tir-sc" if self_correction else "tir"
    assert result.tag == tag and (tmp_path / f"records-{tag}.jsonl").exists()
    o = result.summary["overall"]
    if self_correction:  # the failed call was backtracked over and retried: one clean call per answer
        assert o["tool_success_rate"] == 1.0 and o["corrections_per_answer"] == 1.0 and o["avg@k"] == 1.0
        assert o["attempt_success_rate"] == 0.5
        assert "self-correction" in render_trajectory(result.records[0])
    else:  # the error is shown, the model answers from its text: correct, with a failed call
        assert o["tool_success_rate"] == 0.0 and o["corrections_per_answer"] == 0.0
        assert result.summary["tool_vs_correct"]["fail_correct"] == 2
        text = render_trajectory(result.records[0])
        assert "ZeroDivisionError" in text and "call 1: FAILED" in text


def test_humaneval_program_passes_canonical_and_fails_wrong(sandbox):
    problem = load_benchmark("humaneval", limit=1)[0]
    meta = problem.metadata
    good = f"```python\n{meta['prompt']}{problem.answer}```"
    bad = f"```python\ndef {meta['entry_point']}(*args):\n    return None\n```"
    for completion, expected in ((good, True), (bad, False), (problem.answer, True)):  # a bare body completes the stub
        result = sandbox.run(humaneval_program(meta, completion), 10)
        assert (result.exited_cleanly and eval_code.PASS_MARK in result.stdout) is expected


def test_evaluate_code_scripted(tokenizer, sandbox, tmp_path):
    problems = {p.id: p for p in load_benchmark("humaneval", limit=2)}

    def respond(context):
        p = next(p for p in problems.values() if p.metadata["prompt"].strip() in context)
        body = p.answer if p.id == "HumanEval/0" else "    return None\n"
        return f"```python\n{p.metadata['prompt']}{body}```<|im_end|>"

    backend = ScriptedBackend(tokenizer, respond)
    result = eval_code.evaluate_code(
        backend, sandbox, RolloutConfig(max_new_tokens=600), tmp_path, k=1, limit=2, progress=False
    )
    assert [r.correct for r in result.records] == [True, False]
    assert result.summary["overall"]["avg@k"] == 0.5
    assert Path(result.markdown_path).exists()


def test_math_is_finite_for_huge_tables():
    chi2, p = chi_square_2x2(10**6, 10, 10, 10**6)
    assert math.isfinite(chi2) and p == 0.0


def test_pick_examples():
    picked = pick_examples(hand_made(), 3)
    assert len(picked) == 3 and picked[0].correct and not picked[1].correct and picked[1].corrections


def test_resume_refuses_records_of_other_weights(tokenizer, tmp_path):
    """A checkpoint retrained in place (RL extended with more steps, say) must not inherit the old records."""
    problems = load_benchmark("aime24", limit=1)
    backend = ScriptedBackend(tokenizer, answer_by_question(problems))
    weights = tmp_path / "final"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"step 12")

    def run(out, model):
        return evaluate(backend, None, ["aime24"], 1, "cot", False, RolloutConfig(max_new_tokens=64), out,
                        limit=1, grader=CountingGrader(), progress=False, model=model)  # fmt: skip

    run(tmp_path / "eval", str(weights))
    assert run(tmp_path / "eval", str(weights)).summary["resumed"] == 1  # the same weights: resumed
    (weights / "model.safetensors").write_bytes(b"the weights after step 20")
    with pytest.raises(ValueError, match="model_sha256"):
        run(tmp_path / "eval", str(weights))
    # records written before the model was recorded (or by a caller that names none) still resume
    run(tmp_path / "old", None)
    assert run(tmp_path / "old", str(weights)).summary["resumed"] == 1


def test_resume_refuses_records_of_other_problems_under_the_same_ids(tokenizer, tmp_path):
    """A held-out set drawn with another seed reuses the ids ``heldout-0000``...: its records must not be taken for
    this set's. More problems than before resume the old ones and sample the new."""
    first, second = load_benchmark("aime24", limit=2)
    renamed = dataclasses.replace(second, id=first.id, metadata={})  # another question under the first one's id
    backend = ScriptedBackend(tokenizer, answer_by_question([first, second]))

    def run(problems):
        return evaluate(backend, None, ["aime24"], 1, "cot", False, RolloutConfig(max_new_tokens=64), tmp_path,
                        grader=CountingGrader(), progress=False, problems={"aime24": problems})  # fmt: skip

    run([first])
    with pytest.raises(ValueError, match=f"{first.id}.*another prompt"):
        run([renamed])
    with pytest.raises(ValueError, match="another gold answer"):
        run([dataclasses.replace(first, answer=second.answer)])
    assert run([first, second]).summary["resumed"] == 1  # one more problem: the first resumed, the second sampled


@pytest.mark.model
def test_the_cli_maps_a_user_files_columns_and_names_it_by_its_file_name(tmp_path):
    """``--question-column`` / ``--answer-column`` (load_file's mapping); tables and records name the file, not the
    machine's path to it. A tiny model in CoT mode: the plumbing, not the answers."""
    from thor_core.evaluation import runner
    from thor_core.models import TINY_MODEL

    data = tmp_path / "mine" / "quiz.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps({"q": f"What is {i} + {i}?", "a": str(2 * i)}) + "\n" for i in range(3)))
    out = tmp_path / "eval"
    argv = ["--model", TINY_MODEL, "--backend", "hf", "--mode", "cot", "--benchmarks", str(data), "--limit", "2",
            "--max-new-tokens", "4", "--out-dir", str(out), "--question-column", "q", "--answer-column", "a"]  # fmt: skip
    assert runner.main(argv) == 0
    summary = json.loads((out / "summary-cot.json").read_text())
    assert summary["benchmark_names"] == ["quiz.jsonl"] and str(tmp_path) not in (out / "summary-cot.md").read_text()
    records = [json.loads(line) for line in (out / "records-cot.jsonl").read_text().splitlines()]
    assert [r["gold_answer"] for r in records] == ["0", "2"] and {r["metadata"]["benchmark"] for r in records} == {
        "quiz.jsonl"
    }
    with pytest.raises(SystemExit):  # the column flags without a file to map
        runner.main(["--benchmarks", "aime24", "--question-column", "q", "--out-dir", str(out)])
