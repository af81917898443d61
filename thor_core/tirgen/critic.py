"""TIRGen's critic: the prompt it sees and how its answer is judged.

The critic sees ONE isolated reasoning step, never the question, the earlier
steps or the gold answer (``critic_messages`` takes nothing else), and answers
either ``NO CODE`` or the step rewritten with ```python blocks that do its
computation. Its code is run by the rollout engine in the trajectory's own
sandbox session: the engine stops the critic at each closed python block and
inserts the real ```output block, so whatever output the critic would have
predicted never exists; the critic then finishes the step having seen the
real result.

The wording and the worked examples are ours, kept short and literal so that
a 0.5B instruction model can follow them: one example per kind of work the
paper names (computation, equation solving, enumeration), one "no code" step.

Covered: the messages, ``judge`` (the verdict on a finished critic rollout).
Not covered: running the critic (``thor_core.tirgen.steps``).
"""

from __future__ import annotations

from dataclasses import dataclass

from thor_core import tir
from thor_core.backends.base import end_before_eos, eos_ids_of
from thor_core.record import Trajectory

NO_CODE = "NO CODE"

CRITIC_SYSTEM_PROMPT = (
    "You edit one step of a math solution. You see only that step. "
    "If the step does work that Python can do (arithmetic, solving an equation, counting or listing cases, "
    "simplifying algebra), rewrite the step: keep its sentences, and put that work into a ```python block "
    "that computes it and prints the result. The printed output will be shown to you; then finish the step "
    "with the sentence that states the result. Do not add new steps and do not solve more than the step does. "
    f"If the step has no such work, answer exactly: {NO_CODE}"
)


def _example(code: str, output: str) -> str:
    return f"```python\n{code}\n```\n{tir.render_output_block(output)}"


# (step, answer) pairs shown before the real step.
EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "The tickets cost 17 \\times 24 = 408 dollars in total, so each of the 6 friends pays 408 / 6 = 68 dollars.",
        "The tickets cost 17 \\times 24 dollars in total, shared by 6 friends.\n"
        + _example("total = 17 * 24\nprint(total, total // 6)", "408 68")
        + "So the total is 408 dollars and each of the 6 friends pays 68 dollars.",
    ),
    (
        "First, let us understand the question: we need the number of committees that include the captain.",
        NO_CODE,
    ),
    (
        "Factoring x^2 - 5x + 6 = 0 gives (x - 2)(x - 3) = 0, so the solutions are x = 2 and x = 3.",
        "We solve x^2 - 5x + 6 = 0.\n"
        + _example("import sympy as sp\nx = sp.symbols('x')\nprint(sp.solve(x**2 - 5*x + 6, x))", "[2, 3]")
        + "So the solutions are x = 2 and x = 3.",
    ),
    (
        "Checking the numbers from 1 to 50, the multiples of 3 or 7 are 3, 6, 7, 9, ..., so there are 21 of them.",
        "We count the numbers from 1 to 50 that are multiples of 3 or 7.\n"
        + _example("count = sum(1 for n in range(1, 51) if n % 3 == 0 or n % 7 == 0)\nprint(count)", "21")
        + "So there are 21 of them.",
    ),
)


def critic_messages(step: str) -> list[dict[str, str]]:
    """The critic's chat: system rules, the worked examples as earlier turns, then the step."""
    messages = [{"role": "system", "content": CRITIC_SYSTEM_PROMPT}]
    for example_step, answer in EXAMPLES:
        messages += [{"role": "user", "content": f"Step:\n{example_step}"}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": f"Step:\n{step.strip()}"}]


def critic_prompt_ids(tokenizer, step: str) -> list[int]:
    text = tokenizer.apply_chat_template(critic_messages(step), tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


@dataclass(frozen=True)
class Verdict:
    """``kind``: 'rewrite' (use the critic's tokens up to ``end``), 'no_code' (keep the step) or 'failed' (``reason``)."""

    kind: str
    reason: str = ""
    end: int | None = None


def judge(rollout: Trajectory, step: str, tokenizer) -> Verdict:
    """What a finished critic rollout means for the step it was given.

    Failed: the critic did not finish (token or tool-round limit) or one of
    its calls failed. No code: it said ``NO CODE`` or wrote no python block
    (the step is then kept as the actor wrote it, in the actor's words).
    Otherwise a rewrite, ending where the critic's text ends; except that a
    critic which goes on to write a ``\\boxed{}`` answer the step did not
    have (it solved further than the step) is cut just after its last output
    block before that answer, so the actor draws the conclusion from the real
    output itself (failed when no output block precedes the answer).
    """
    text = tokenizer.decode(rollout.completion_ids, skip_special_tokens=True)
    if rollout.finish_reason != "eos":
        return Verdict("failed", f"critic_{rollout.finish_reason or 'unfinished'}")
    if not rollout.tool_calls:
        return Verdict("no_code", "said no code" if text.strip().upper().startswith(NO_CODE) else "wrote no code")
    if not rollout.all_calls_succeeded:
        return Verdict("failed", "critic_code_failed")
    if NO_CODE in text:
        return Verdict("failed", "critic_mixed_no_code")
    end = end_before_eos(rollout.completion_ids, eos_ids_of(tokenizer))
    if tir.last_boxed(step) is None and tir.last_boxed(tokenizer.decode(rollout.completion_ids[:end])) is not None:
        ends = [c.output_span[1] for c in rollout.tool_calls]
        clean = [e for e in ends if tir.last_boxed(tokenizer.decode(rollout.completion_ids[:e])) is None]
        if not clean:
            return Verdict("failed", "critic_added_answer")
        return Verdict("rewrite", "cut before the critic's answer", max(clean))
    return Verdict("rewrite", "", end)
