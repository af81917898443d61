"""The rollout loop on a scripted policy (deterministic) and on the real embedded model."""

import os
import signal

import pytest

from thor_core.backends.scripted import SCRIPTED_LOGPROB, ScriptedBackend
from thor_core.engine.rollout import SESSION_LOST, RolloutConfig, RolloutTask, make_tasks, run_rollouts
from thor_core.record import Trajectory

END = "<|im_end|>"


def task_for(tokenizer, question="What is 6*7?", prefix=None):
    from thor_core import tir

    prompt = tokenizer.encode(tir.render_prompt(tokenizer, question), add_special_tokens=False)
    return RolloutTask(question_id="q", question=question, gold_answer="42", prompt_ids=prompt, prefix=prefix)


def run(tokenizer, sandbox, respond, **cfg):
    backend = ScriptedBackend(tokenizer, respond)
    [record] = run_rollouts(
        backend, sandbox, [task_for(tokenizer, prefix=cfg.pop("prefix", None))], RolloutConfig(**cfg), progress=False
    )
    return record, backend


def two_step_policy(context):
    if "```output" not in context.split("<|im_start|>assistant")[-1]:
        return "Let me compute.\n```python\nprint(6*7)\n```\n"
    return "So the answer is \\boxed{42}." + END


def test_masks_spans_and_text_are_exact(qwen_tokenizer, sandbox):
    tok = qwen_tokenizer
    record, backend = run(tok, sandbox, two_step_policy)
    assert record.finish_reason == "eos" and record.final_answer == "42"
    assert tok.decode(record.completion_ids) == record.completion_text
    [call] = record.tool_calls
    assert call.success and call.observation == "42"
    out_start, out_end = call.output_span
    assert tok.decode(record.completion_ids[out_start:out_end]) == "```output\n42\n```\n"
    assert record.mask == [0 if out_start <= i < out_end else 1 for i in range(len(record.mask))]
    assert "```python\nprint(6*7)\n```" in tok.decode(record.completion_ids[slice(*call.code_span)])
    assert call.code_span[1] == out_start
    policy_text = tok.decode([t for t, m in zip(record.completion_ids, record.mask) if m])
    assert policy_text == "Let me compute.\n```python\nprint(6*7)\n```\nSo the answer is \\boxed{42}." + END
    assert [lp is None for lp in record.logprobs] == [m == 0 for m in record.mask]
    assert all(lp == SCRIPTED_LOGPROB for lp, m in zip(record.logprobs, record.mask) if m)


def test_the_backend_is_conditioned_on_exactly_the_record_ids(qwen_tokenizer, sandbox):
    """No separator token may be lost at the policy/tool boundary (verl #6921)."""
    record, backend = run(qwen_tokenizer, sandbox, two_step_policy)
    second = backend.requests[1].ids
    out_end = record.tool_calls[0].output_span[1]
    assert second == record.prompt_ids + record.completion_ids[:out_end]


def test_tool_round_limit_marks_the_record(qwen_tokenizer, sandbox):
    record, _ = run(qwen_tokenizer, sandbox, lambda c: "```python\nprint(1)\n```\n", max_tool_rounds=2)
    assert record.finish_reason == "max_tool_rounds"
    assert len(record.tool_calls) == 2
    assert record.completion_text.count("```python") == 3  # the third block was written, never run


def test_token_budget_marks_the_record(qwen_tokenizer, sandbox):
    record, _ = run(qwen_tokenizer, sandbox, lambda c: "word " * 200, max_new_tokens=30)
    assert record.finish_reason == "length" and len(record.completion_ids) == 30


def test_self_correction_backtracks_and_keeps_only_the_kept_path(qwen_tokenizer, sandbox):
    attempts = []

    def policy(context):
        body = context.split("<|im_start|>assistant")[-1]
        if "```output" in body:
            return "Done: \\boxed{42}." + END
        attempts.append(body)
        if len(attempts) == 1:
            return "First I will divide carefully.\n```python\nprint(1/0)\n```\n"
        return "Multiply instead.\n```python\nprint(6*7)\n```\n"

    record, _ = run(qwen_tokenizer, sandbox, policy, self_correction=True, correction_suffix_tokens=3)
    assert record.final_answer == "42" and record.all_calls_succeeded
    assert "1/0" not in record.completion_text
    [correction] = record.corrections
    assert correction.code == "print(1/0)" and "ZeroDivisionError" in correction.observation
    assert correction.dropped_text.endswith("```python\nprint(1/0)\n```\n")
    # the retry resumed from the kept prefix: the first 3 tokens before the code were dropped, the rest kept
    kept = qwen_tokenizer.decode(record.completion_ids[: correction.at_token])
    assert "First I will" in kept and "carefully" not in kept
    assert record.metadata["tool_rounds"] == 2  # the retry counted as a round


def test_self_correction_gives_up_after_max_corrections(qwen_tokenizer, sandbox):
    def policy(context):
        body = context.split("<|im_start|>assistant")[-1]
        if "```output" in body:
            return "I could not compute it. \\boxed{0}" + END
        return "Try.\n```python\nprint(1/0)\n```\n"

    record, _ = run(qwen_tokenizer, sandbox, policy, self_correction=True, max_corrections=2, max_tool_rounds=10)
    assert len(record.corrections) == 2
    [call] = record.tool_calls  # the third failure was shown to the model
    assert not call.success and "ZeroDivisionError" in call.observation
    assert record.metadata["tool_rounds"] == 3


def test_stop_after_answer_skips_code_written_after_the_box(qwen_tokenizer, sandbox):
    record, _ = run(qwen_tokenizer, sandbox, lambda c: "It is \\boxed{5}.\n```python\nprint(5)\n```\n")
    assert record.finish_reason == "answer" and record.tool_calls == []


def test_continuing_from_a_prefix_replays_the_sandbox_state(qwen_tokenizer, sandbox):
    first, _ = run(qwen_tokenizer, sandbox, lambda c: "```python\nx = 21\nprint(x)\n```\n", stop_after_code=True)
    assert first.finish_reason == "code_executed" and first.tool_calls[0].observation == "21"
    record, backend = run(
        qwen_tokenizer, sandbox, lambda c: "```python\nprint(x * 2)\n```\n", prefix=first, stop_after_code=True
    )
    assert record.completion_ids[: len(first.completion_ids)] == first.completion_ids
    assert record.mask[: len(first.mask)] == first.mask
    assert [c.observation for c in record.tool_calls] == ["21", "42"]
    assert backend.requests[0].ids == first.prompt_ids + first.completion_ids


def test_a_silent_cell_fails_by_the_rule_but_its_state_is_replayed(qwen_tokenizer, sandbox):
    """A cell that prints nothing is a failed call (the authors' rule) yet its variables live on in the session; a
    continuation from a prefix that holds one must see them too (step-level RL's prefixes, TIRGen's retries)."""
    first, _ = run(qwen_tokenizer, sandbox, lambda c: "```python\nx = 21\n```\n", stop_after_code=True)
    [silent] = first.tool_calls
    assert not silent.success and silent.exited_cleanly and silent.kept_state
    record, _ = run(
        qwen_tokenizer, sandbox, lambda c: "```python\nprint(x * 2)\n```\n", prefix=first, stop_after_code=True
    )
    assert [c.observation for c in record.tool_calls][-1] == "42"  # replayed, not NameError
    crashed, _ = run(qwen_tokenizer, sandbox, lambda c: "```python\ny = 1 / 0\n```\n", stop_after_code=True)
    assert not crashed.tool_calls[0].kept_state  # a raising cell is rolled back, and not replayed


def test_rl_shortcut_ends_at_the_first_failed_call(qwen_tokenizer, sandbox):
    def policy(context):
        reply = context.split("<|im_start|>assistant")[-1]
        return "```python\nprint(1)\n```\n" if "```output" not in reply else "```python\nprint(y)\n```\n"

    record, _ = run(qwen_tokenizer, sandbox, policy, stop_at_failed_call=True)
    assert record.finish_reason == "failed_call" and [c.success for c in record.tool_calls] == [True, False]


class _Watched:
    """The real sandbox, keeping the sessions it opens (so that a test can kill one's holder process)."""

    def __init__(self, sandbox):
        self.sandbox, self.sessions = sandbox, []

    def session(self):
        self.sessions.append(self.sandbox.session())
        return self.sessions[-1]

    def health_check(self):
        return self.sandbox.health_check()


def test_a_session_that_dies_under_a_call_costs_the_call_not_the_run(qwen_tokenizer, sandbox):
    """The holder process of the trajectory's session is SIGKILLed between two calls: the next call is recorded as
    failed with the lost-session line (which RL's infrastructure check treats as the sandbox's fault), a new session
    gets the first call's state replayed, and the trajectory goes on to its answer."""
    from thor_core.rl.trainer import sandbox_fault

    watched = _Watched(sandbox)

    def policy(context):
        done = context.split("<|im_start|>assistant")[-1].count("```output")
        if done == 1:
            os.kill(watched.sessions[0].info["pid"], signal.SIGKILL)  # the holder dies before the second cell
        return ["```python\nx = 21\nprint(x)\n```\n", "```python\nprint(x + 1)\n```\n",
                "```python\nprint(x * 2)\n```\n", "\\boxed{42}" + END][done]  # fmt: skip

    record, _ = run(qwen_tokenizer, watched, policy)
    first, lost, after = record.tool_calls
    assert (first.observation, after.observation) == ("21", "42")  # x replayed into the new session
    assert lost.observation.startswith(SESSION_LOST) and not lost.success and not lost.kept_state
    assert sandbox_fault(lost.observation) and record.final_answer == "42" and len(watched.sessions) == 2


def test_a_task_budget_counts_after_its_prefix(qwen_tokenizer, sandbox):
    first, _ = run(qwen_tokenizer, sandbox, lambda c: "```python\nprint(3)\n```\n", stop_after_code=True)
    task = task_for(qwen_tokenizer, prefix=first)
    task.max_new_tokens = 5
    backend = ScriptedBackend(qwen_tokenizer, lambda c: "one two three four five six seven eight")
    [record] = run_rollouts(
        backend, sandbox, [task], RolloutConfig(max_new_tokens=len(first.completion_ids)), progress=False
    )
    assert record.finish_reason == "length" and len(record.completion_ids) == len(first.completion_ids) + 5


def test_cot_mode_never_runs_code(qwen_tokenizer):
    record, _ = run(qwen_tokenizer, None, lambda c: "```python\nprint(1)\n```\nthen \\boxed{1}" + END, tools=False)
    assert record.tool_calls == [] and record.finish_reason == "eos" and all(record.mask)


def test_step_mode_stops_at_a_paragraph(qwen_tokenizer):
    record, _ = run(
        qwen_tokenizer, None, lambda c: "Step one is this.\n\nStep two." + END, tools=False, step_stop=("\n\n",)
    )
    assert record.finish_reason == "step" and record.completion_text == "Step one is this.\n\n"


def test_tools_without_a_sandbox_is_refused(qwen_tokenizer):
    with pytest.raises(ValueError, match="no sandbox"):
        run(qwen_tokenizer, None, two_step_policy)


@pytest.mark.model
@pytest.mark.parametrize("kind", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_real_model_solves_arithmetic_with_code(sandbox, kind):
    """The embedded Qwen model, a real backend and the real sandbox, end to end."""
    from dataclasses import dataclass

    from thor_core.backends import GREEDY, make_backend
    from thor_core.grading import answers_equivalent

    @dataclass
    class P:
        id: str
        question: str
        answer: str

    problems = [
        P("a", "What is 123456789 * 987654321? Compute it with Python.", "121932631112635269"),
        P("b", "What is the sum of the integers from 1 to 1000? Compute it with Python.", "500500"),
        P("c", "What is 2 to the power 40? Compute it with Python.", "1099511627776"),
    ]
    with make_backend(kind, "embedded:qwen2.5-coder-0.5b-instruct") as backend:
        tasks = make_tasks(problems, backend.tokenizer)
        records = run_rollouts(
            backend, sandbox, tasks, RolloutConfig(max_new_tokens=256, sampling=GREEDY), progress=False
        )
    for r in records:
        assert isinstance(r, Trajectory)
        assert backend.tokenizer.decode(r.completion_ids) == r.completion_text
    with_code = [r for r in records if r.tool_calls and r.tool_calls[0].success]
    assert with_code, [r.completion_text for r in records]
    correct = [r for r, p in zip(records, problems) if r.final_answer and answers_equivalent(p.answer, r.final_answer)]
    assert correct, [r.completion_text for r in records]


class _CountingSandbox:
    """The real sandbox, counting the sessions open at once (each is a worker process)."""

    def __init__(self, sandbox):
        self.sandbox, self.open, self.most = sandbox, 0, 0

    def health_check(self):
        self.sandbox.health_check()

    def session(self):
        counter, session = self, self.sandbox.session()
        counter.open += 1
        counter.most = max(counter.most, counter.open)
        close = session.close

        def closing():
            counter.open -= 1
            close()

        session.close = closing
        return session


@pytest.mark.parametrize("cap, most", [(None, 6), (2, 2)])
def test_max_in_flight_bounds_the_open_sandbox_sessions(qwen_tokenizer, sandbox, cap, most):
    counting = _CountingSandbox(sandbox)
    tasks = [task_for(qwen_tokenizer, question=f"What is 6*{i}?") for i in range(6)]
    backend = ScriptedBackend(qwen_tokenizer, two_step_policy)
    records = run_rollouts(backend, counting, tasks, RolloutConfig(), progress=False, max_in_flight=cap)
    assert counting.most == most and counting.open == 0
    assert [r.question for r in records] == [t.question for t in tasks]  # task order kept
    assert all(r.final_answer == "42" and r.tool_calls[0].success for r in records)
