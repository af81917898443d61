"""TIRGen's actor-critic loop on a scripted actor and critic, against the real sandbox and grader."""

from __future__ import annotations

import asyncio

import pytest

from thor_core import tir
from thor_core.backends.scripted import ScriptedBackend
from thor_core.engine.rollout import RolloutTask
from thor_core.tirgen import actor_critic, critic

END = "<|im_end|>"
QUESTION = "QMARK: what is twelve times thirteen, plus one?"
STEP_A = "Step A: we need a product and a sum.\n\n"
STEP_B = "Step B: 12 times 13 is 156.\n\n"
STEP_C = "Step C: adding one gives 157.\n\n"
FINAL = "So the answer is \\boxed{157}." + END


def completion_of(context: str) -> str:
    return context.split("<|im_start|>assistant\n")[-1]


def actor_policy(context: str) -> str:
    """Writes steps A, B, C and the answer, continuing from whatever the critic rewrote."""
    done = completion_of(context)
    if "157" in done:
        return FINAL
    if "156" in done:
        return STEP_C
    if "Step A" in done:
        return STEP_B
    return STEP_A


def make_critic_policy(fail_first: bool = False):
    """B: code for the product (predicting a wrong output that must never appear); C: uses B's variable."""
    calls = {"n": 0}

    def policy(context: str) -> str:
        step = context.split("Step:\n")[-1]
        done = completion_of(context)
        if "Step A" in step:
            return critic.NO_CODE + END
        if "Step B" in step:
            if "```output" in done:
                return "So 12 times 13 is 156." + END
            return "Step B: compute it.\n```python\nimport math\nprod = math.prod([12, 13])\nprint(prod)\n```\n```output\n999\n```\n"
        if "Step C" in step:
            calls["n"] += "```" not in done  # a new critic attempt starts with an empty rewrite
            if fail_first and calls["n"] == 1:
                if "Error" in done:
                    return END
                if "```output" in done:
                    return "```python\n1/0\n```\n"
                return "```python\nleak = 1\nprint(leak)\n```\n"
            if "```output" in done:
                return "Adding one gives 157." + END
            return "Step C:\n```python\nprint(prod + 1, 'leak' in dir())\n```\n"
        return critic.NO_CODE + END

    return policy


def run_one(tok, sandbox, actor, critic_backend, **cfg):
    prompt = tok.encode(tir.render_prompt(tok, QUESTION, "cot"), add_special_tokens=False)
    task = RolloutTask("q1", QUESTION, "157", prompt, seed=1, metadata={"sample": 0})
    return asyncio.run(
        actor_critic.generate_one(actor, critic_backend, sandbox, task, actor_critic.TIRGenConfig(**cfg))
    )


def test_loop_rewrites_steps_runs_real_code_and_keeps_ids_exact(qwen_tokenizer, sandbox):
    tok = qwen_tokenizer
    actor = ScriptedBackend(tok, actor_policy)
    crit = ScriptedBackend(tok, make_critic_policy())
    r = run_one(tok, sandbox, actor, crit)
    s = r.metadata["tirgen"]
    assert r.finish_reason == "eos" and r.final_answer == "157" and s["dropped"] is None
    assert s["no_code"] == 2 and s["rewritten"] == 2 and s["critic_calls"] == 4
    text = tok.decode(r.completion_ids)
    assert text == r.completion_text
    assert text.startswith(STEP_A)  # "no code" keeps the actor's words
    assert "999" not in text and "```output\n156\n```" in text  # the real output, never the predicted one
    assert "```output\n157 False\n```" in text  # state carried from step B's cell to step C's
    assert [c.success for c in r.tool_calls] == [True, True]
    # sources add up, and each source's tokens are what that writer produced
    assert len(r.token_sources) == len(r.completion_ids)
    pick = lambda ch: tok.decode([t for t, s in zip(r.completion_ids, r.token_sources) if s == ch])  # noqa: E731
    assert pick("a") == STEP_A + FINAL
    assert pick("t") == "```output\n156\n```\n```output\n157 False\n```\n"
    assert "Step B: compute it." in pick("c") and "Adding one gives 157." in pick("c")
    assert [m for m in r.mask] == [0 if s == "t" else 1 for s in r.token_sources]
    for call in r.tool_calls:
        assert tok.decode(r.completion_ids[slice(*call.output_span)]).startswith("```output\n")
        assert "```python" in tok.decode(r.completion_ids[slice(*call.code_span)])


def test_the_critic_sees_only_the_step(qwen_tokenizer, sandbox):
    tok = qwen_tokenizer
    crit = ScriptedBackend(tok, make_critic_policy())
    run_one(tok, sandbox, ScriptedBackend(tok, actor_policy), crit)
    prompts = [tok.decode(req.ids) for req in crit.requests]
    assert prompts and all("QMARK" not in p for p in prompts)
    step_b_prompts = [p for p in prompts if "Step B" in p.split("Step:\n")[-1]]
    assert step_b_prompts and all("Step A" not in p for p in step_b_prompts)  # no earlier steps
    step_a_prompt = next(p for p in prompts if "Step A" in p.split("Step:\n")[-1])
    assert "157" not in step_a_prompt.split("Step:\n")[-1] and "boxed{157}" not in step_a_prompt


def test_a_failed_critic_call_drops_or_retries_on_a_clean_session(qwen_tokenizer, sandbox):
    tok = qwen_tokenizer
    dropped = run_one(tok, sandbox, ScriptedBackend(tok, actor_policy), ScriptedBackend(tok, make_critic_policy(True)))
    assert dropped.metadata["tirgen"]["dropped"] == "critic_code_failed"
    assert dropped.metadata["tirgen"]["stop"] == "critic_failed"
    retried = run_one(
        tok, sandbox, ScriptedBackend(tok, actor_policy), ScriptedBackend(tok, make_critic_policy(True)),
        critic_retries=1,
    )  # fmt: skip
    s = retried.metadata["tirgen"]
    assert s["dropped"] is None and s["critic_failures"] == ["critic_code_failed"] and s["failed_rewrites"]
    text = tok.decode(retried.completion_ids)
    assert "```output\n157 False\n```" in text  # the failed attempt's `leak = 1` was rolled back
    assert "1/0" not in text and retried.final_answer == "157"


def test_a_step_cut_by_the_budget_snaps_back_to_its_last_line_break(qwen_tokenizer, sandbox):
    tok = qwen_tokenizer
    long_line = "and this line runs on " * 12

    def actor(context):
        done = completion_of(context)
        if "Second" in done:
            return FINAL
        if "First line.\n" in done:
            return "Second line, regenerated.\n\n"
        return "First line.\n" + long_line  # no blank line: only the budget ends this step

    r = run_one(tok, sandbox, ScriptedBackend(tok, actor), ScriptedBackend(tok, lambda c: critic.NO_CODE + END),
                step_tokens=20)  # fmt: skip
    text = tok.decode(r.completion_ids)
    assert text.startswith("First line.\nSecond line, regenerated.")  # the cut-off text was dropped
    assert "runs on" not in text and r.metadata["tirgen"]["snapped"] == 1


def test_snap_to_line_break(qwen_tokenizer):
    tok = qwen_tokenizer
    ids = tok.encode("alpha\nbeta gamma", add_special_tokens=False)
    cut = actor_critic.snap_to_line_break(tok, ids, 0)
    assert tok.decode(ids[:cut]) == "alpha\n"
    no_break = tok.encode("alpha beta", add_special_tokens=False)
    assert actor_critic.snap_to_line_break(tok, no_break, 0) == len(no_break)


def test_a_critic_that_solves_further_is_cut_after_its_last_output(qwen_tokenizer, sandbox):
    tok = qwen_tokenizer

    def eager_critic(context):
        if "answer is" in context.split("Step:\n")[-1]:
            return critic.NO_CODE + END
        if "```output" in completion_of(context):
            return "So the whole answer is \\boxed{157}." + END
        return "We compute.\n```python\nprint(12 * 13 + 1)\n```\n"

    def actor(context):
        done = completion_of(context)
        return FINAL if "```output" in done else "We first need the product.\n\n"

    r = run_one(tok, sandbox, ScriptedBackend(tok, actor), ScriptedBackend(tok, eager_critic))
    text = tok.decode(r.completion_ids)
    assert text == "We compute.\n```python\nprint(12 * 13 + 1)\n```\n```output\n157\n```\n" + FINAL
    assert r.metadata["tirgen"]["cut"] == 1 and r.token_sources.endswith("a" * len(tok.encode(FINAL)))


def test_long_cot_critic_stops_at_the_end_of_thinking(qwen_tokenizer, sandbox):
    tok = qwen_tokenizer

    def actor(context):
        done = completion_of(context)
        if "</think>" in done:
            return "Final: 12 times 13 is 156, so \\boxed{156}." + END
        if "156" in done:
            return "</think>\n\n"
        return "<think>\nStep B: 12 times 13 is 156.\n\n"

    crit = ScriptedBackend(tok, make_critic_policy())
    r = run_one(tok, sandbox, ScriptedBackend(tok, actor), crit, long_cot=True)
    s = r.metadata["tirgen"]
    assert s["rewritten"] == 1 and s["skipped"] == 2  # '</think>' step and the answer after it skip the critic
    assert r.final_answer == "156" and r.n_calls == 1


def test_a_critic_with_another_vocabulary_is_refused(qwen_tokenizer):
    from transformers import AutoTokenizer

    from thor_core.models import resolve_model

    smol_tok = AutoTokenizer.from_pretrained(resolve_model("embedded:smollm2-135m-instruct"))
    a, c = ScriptedBackend(qwen_tokenizer, actor_policy), ScriptedBackend(smol_tok, actor_policy)
    with pytest.raises(ValueError, match="share the actor's vocabulary"):
        actor_critic.check_backends(a, c)
    actor_critic.check_backends(a, ScriptedBackend(qwen_tokenizer, actor_policy))  # same vocabulary: fine
    assert actor_critic.foreign_ids([len(qwen_tokenizer.get_vocab()) + 5], a)
    assert not actor_critic.foreign_ids(qwen_tokenizer.encode("print(1)"), a)
