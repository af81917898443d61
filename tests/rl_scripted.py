"""A scripted policy for RL trainer tests: real model updates, deterministic rollouts.

Questions "Compute A + B." (a JSONL file ``write_problems`` makes). The k-th
visit of a prompt (k mod 4) answers: right with code, wrong with code, with
failing code (a step-level prefix), right with code. A step-level
continuation alternates a working and a failing code block. So every episode
group and every step-level group has reward spread, and the real model's
update runs on every step. Run as a script (``accelerate launch``) it trains
one run from a JSON file of RLParams overrides. ``trajectory_from_pieces`` builds a hand-made record
(policy text, code blocks that ran or failed, inserted outputs) for the batch and step-check tests.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from thor_core import tir
from thor_core.backends.scripted import ScriptedBackend
from thor_core.models import TINY_MODEL
from thor_core.record import ToolCall, Trajectory

MODEL = TINY_MODEL  # mechanics: the tiny random Qwen


def trajectory_from_pieces(tok, pieces, **fields) -> Trajectory:
    """A trajectory from (text, kind) pieces: kind 'policy', 'ok' / 'fail' (a code block) or 'output' (inserted).

    ``fields`` override the defaults (question "Q?", gold "7", prompt [1, 2, 3], log-probs -0.5, the boxed answer).
    """
    ids, mask, calls, code = [], [], [], None
    for text, kind in pieces:
        new = tok.encode(text, add_special_tokens=False)
        start = len(ids)
        ids += new
        mask += [0 if kind == "output" else 1] * len(new)
        if kind in ("ok", "fail"):
            code = (start, len(ids), kind == "ok", tir.code_blocks(text)[0])  # the code, as the engine records it
        if kind == "output":
            s, e, ok, src = code
            calls.append(ToolCall(src, ok, text, (s, e), (start, len(ids))))
    text = tok.decode(ids)
    defaults = {"question_id": "q", "question": "Q?", "gold_answer": "7", "prompt_ids": [1, 2, 3],
                "logprobs": [-0.5] * len(ids), "final_answer": tir.last_boxed(text)}  # fmt: skip
    return Trajectory(**{**defaults, **fields}, completion_ids=ids, mask=mask, tool_calls=calls, completion_text=text)


def write_problems(path: Path, n: int = 8) -> Path:
    rows = [{"problem": f"Compute {a} + {a + 3}.", "solution": str(2 * a + 3)} for a in range(1, n + 1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def policy():
    visits: Counter = Counter()

    def respond(context: str) -> str:
        visits[context] += 1
        k = (visits[context] - 1) % 4
        a, b = map(int, re.findall(r"Compute (\d+) \+ (\d+)\.", context)[-1])
        reply = context.rsplit("<|im_start|>assistant", 1)[-1]
        if "```output" in reply:  # after a call: the answer
            value = re.findall(r"```output\n(.*?)\n```", reply, re.S)[-1].strip()
            return f"So the sum is \\boxed{{{value}}}.<|im_end|>"
        if "Let me" in reply:  # a step-level continuation
            return "check.\n```python\nprint(1)\n```\n" if k % 2 == 0 else "check.\n```python\nprint(x)\n```\n"
        code = {0: f"print({a} + {b})", 1: f"print({a} - {b})", 2: "print(undefined_name)", 3: f"print({b} + {a})"}[k]
        return f"Let me add the two numbers with a short program now.\n```python\n{code}\n```\n"

    return respond


def scripted_backend(tokenizer) -> ScriptedBackend:
    return ScriptedBackend(tokenizer, policy())


def params(out: Path, problems: Path, **overrides):
    from thor_core.rl.config import RLParams

    values = dict(
        model=MODEL, mode="thor", output_dir=str(out), problems=str(problems), n_problems=8, steps=2,
        questions_per_step=2, group_size=4, max_refill_rounds=0, backend="hf", max_new_tokens=96,
        step_max_new_tokens=32, suffix_tokens=4, micro_batch_rows=2, learning_rate=1e-4, progress="lines",
        save_total_limit=1,
    )  # fmt: skip
    values.update(overrides)
    return RLParams(**values)


def run(out: Path, problems: Path, **overrides) -> dict:
    from thor_core.rl.trainer import Trainer

    trainer = Trainer(params(out, problems, **overrides), progress=False)
    return trainer.train(scripted_backend(trainer.tokenizer))


if __name__ == "__main__":  # accelerate launch tests/rl_scripted.py OUT PROBLEMS OVERRIDES_JSON
    out, problems, overrides = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    run(out, problems, **overrides)
