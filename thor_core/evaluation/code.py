"""HumanEval pass@1 / pass@k: the model writes a function, the sandbox runs the problem's tests.

Covered: ``evaluate_code`` (one-shot generation without tools, k samples per
problem, graded by running ``humaneval_program`` in the sandbox: a sample
passes when the program exits cleanly and prints ``PASS_MARK``), resumable and
with the same files as ``thor_core.evaluation.runner.evaluate`` under the tag
``humaneval``; ``code_prompt_ids`` (the chat prompt) and ``humaneval_program``.

Not covered: HumanEval+, MBPP+ or LiveCodeBench (no offline data here).
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from thor_core import tir
from thor_core.data.benchmarks import load_benchmark
from thor_core.engine.rollout import RolloutConfig, RolloutTask
from thor_core.evaluation.metrics import summarize
from thor_core.evaluation.runner import EvalResult, finish_run, run_resumable
from thor_core.record import Trajectory

CODE_SYSTEM_PROMPT = (
    "You are an expert Python programmer. Complete the function the user gives you. "
    "Reply with the complete function, including its signature and any imports it needs, "
    "in a single ```python code block."
)
PASS_MARK = "__THOR_TESTS_PASSED__"


def code_prompt_ids(tokenizer, prompt: str) -> list[int]:
    messages = [
        {"role": "system", "content": CODE_SYSTEM_PROMPT},
        {"role": "user", "content": f"```python\n{prompt}```"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


_ANY_FENCE = re.compile(r"```[A-Za-z0-9_+-]*\n(.*?)(?:```|$)", re.S)


def humaneval_program(metadata: dict[str, Any], completion: str) -> str:
    """The test program: the problem's prompt, the model's code (last python block), the tests, a pass mark.

    The prompt comes first so its imports are there; a completion that defines
    the entry point redefines the stub, one that holds only a body completes it.
    """
    blocks = tir.code_blocks(completion) or [m.group(1) for m in _ANY_FENCE.finditer(completion)]
    code = blocks[-1] if blocks else completion
    return (
        f"{metadata['prompt']}{code}\n\n\n{metadata['test']}\n\n"
        f"check({metadata['entry_point']})\nprint({PASS_MARK!r})\n"
    )


def _code_grader(sandbox, problems: dict[str, dict[str, Any]], timeout_s: float | None) -> Callable[[Trajectory], None]:
    def grade(record: Trajectory) -> None:
        result = sandbox.run(humaneval_program(problems[record.question_id], record.completion_text), timeout_s)
        record.correct = bool(result.exited_cleanly and PASS_MARK in result.stdout)
        record.metadata["test"] = {"observation": result.observation, "timed_out": result.timed_out}

    return grade


def evaluate_code(
    backend,
    sandbox,
    cfg: RolloutConfig,
    out_dir: str | os.PathLike,
    k: int = 1,
    limit: int | None = None,
    timeout_s: float | None = 10.0,
    progress: bool = True,
) -> EvalResult:
    """HumanEval pass@1 / pass@k: generate each function (no tools) and run its tests in ``sandbox``.

    Records go to ``records-humaneval.jsonl`` (resumable as in ``evaluate``); a
    sample passes when the test program (``humaneval_program``) exits cleanly
    and prints its pass mark within ``timeout_s``.
    """
    cfg = replace(cfg, tools=False, self_correction=False, stop_after_answer=False)
    problems = {p.id: p.metadata for p in load_benchmark("humaneval", limit=limit)}
    tasks = [
        RolloutTask(
            qid,
            meta["prompt"],
            None,
            code_prompt_ids(backend.tokenizer, meta["prompt"]),
            seed=zlib.crc32(f"{cfg.seed}/{qid}/{s}".encode()) & 0x7FFFFFFF,
            metadata={"sample": s, "mode": "code", "benchmark": "humaneval"},
        )
        for qid, meta in problems.items()
        for s in range(k)
    ]
    sandbox.health_check()
    config = {"mode": "code", "rollout": dataclasses.asdict(cfg), "timeout_s": timeout_s}
    out_dir = Path(out_dir)
    records, run = run_resumable(
        backend, sandbox, tasks, cfg, out_dir, "humaneval", _code_grader(sandbox, problems, timeout_s), config, progress
    )
    summary = {
        **run,
        "mode": "code",
        "self_correction": False,
        "backend": backend.name,
        "benchmark_names": ["humaneval"],
        "limit": limit,
        "rollout": config["rollout"],
        **summarize(records, k),
    }
    return finish_run(out_dir, "humaneval", records, summary)
