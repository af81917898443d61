"""TIRGen's multi-stage filter, one small pure function per rule, and the funnel.

Rules (docs/METHOD.md, "TIRGen"; a record passes a rule when the
function returns True), applied in this order, each stage counted:

1. ``critic_ok``: the critic never failed on it (a failed critic call drops the attempt);
2. ``correct``: the graded final answer is right (math-verify, ``thor_core.grading``);
3. ``calls_succeeded``: every code call succeeded;
4. ``nonempty_boxed``: the last ``\\boxed{}`` holds something (``\\boxed{ }`` and
   ``\\boxed{}`` fail: the authors' pattern never matched, ours does);
5. ``balanced_dollars``: an even number of unescaped ``$``;
6. ``no_repetition``: no 20-character substring more than 20 times;
7. ``has_code``: at least one code call;
8. ``nontrivial_code``: ``paper`` (some block imports or calls a library, or has
   a loop or branch), ``authors`` (reject when more than 40% of blocks have 5 or
   fewer non-comment lines) or ``off``.

Then question-level stages: one passing attempt per question (a seeded
choice that depends only on the question id, so shards merge to the same
result) and rebalancing by number of code calls (the authors halve the
1-call bucket: ``one_call_keep=0.5``). Questions that plain CoT already solves
are removed before generation (``tirgen``), which saves their compute.

Not covered: the authors' long-CoT-only rules (3000+ tokens, dropping
Traditional Chinese text).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from thor_core import tir
from thor_core.engine.rollout import mix_seed
from thor_core.record import Trajectory

_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def critic_ok(record: Trajectory) -> bool:
    return not record.metadata.get("tirgen", {}).get("dropped")


def correct(record: Trajectory) -> bool:
    return record.correct is True


def calls_succeeded(record: Trajectory) -> bool:
    return record.all_calls_succeeded


def nonempty_boxed(text: str) -> bool:
    answers = tir.boxed_answers(text)
    return bool(answers) and bool(answers[-1].strip())


def balanced_dollars(text: str) -> bool:
    return len(_UNESCAPED_DOLLAR.findall(text)) % 2 == 0


def no_repetition(text: str, length: int = 20, max_count: int = 20) -> bool:
    if len(text) < length * (max_count + 1):
        return True
    counts = Counter(text[i : i + length] for i in range(len(text) - length + 1))
    return max(counts.values()) <= max_count


def has_code(record: Trajectory) -> bool:
    return record.n_calls > 0


def code_lines(code: str) -> int:
    """Non-empty, non-comment lines."""
    return sum(1 for line in code.splitlines() if line.strip() and not line.strip().startswith("#"))


def block_is_nontrivial(code: str) -> bool:
    """The paper's rule for one block: an import or a library call (``module.f(...)``), or a loop or branch."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom | ast.For | ast.While | ast.If | ast.IfExp | ast.comprehension):
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            return True
    return False


def nontrivial_code(codes: Sequence[str], rule: Literal["paper", "authors", "off"] = "paper") -> bool:
    if rule == "off":
        return True
    if not codes:
        return False
    if rule == "paper":
        return any(block_is_nontrivial(c) for c in codes)
    if rule == "authors":
        return sum(code_lines(c) <= 5 for c in codes) <= 0.4 * len(codes)
    raise ValueError(f"nontrivial_code rule must be 'paper', 'authors' or 'off', got {rule!r}")


@dataclass(frozen=True)
class FilterConfig:
    nontrivial: Literal["paper", "authors", "off"] = "paper"
    repetition_length: int = 20
    repetition_max: int = 20
    one_call_keep: float = 0.5  # share of 1-call samples kept (authors: 0.5; 1.0 = no rebalancing)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.one_call_keep <= 1.0:
            raise ValueError(f"one_call_keep must be in [0, 1], got {self.one_call_keep}")


def rules(cfg: FilterConfig) -> list[tuple[str, Callable[[Trajectory], bool]]]:
    """The record-level rules in funnel order, as (name, predicate)."""
    return [
        ("critic_ok", critic_ok),
        ("correct", correct),
        ("calls_succeeded", calls_succeeded),
        ("nonempty_boxed", lambda r: nonempty_boxed(r.completion_text)),
        ("balanced_dollars", lambda r: balanced_dollars(r.completion_text)),
        ("no_repetition", lambda r: no_repetition(r.completion_text, cfg.repetition_length, cfg.repetition_max)),
        ("has_code", has_code),
        ("nontrivial_code", lambda r: nontrivial_code([c.code for c in r.tool_calls], cfg.nontrivial)),
    ]


def _stage(name: str, records: Sequence[Trajectory]) -> dict:
    return {"stage": name, "samples": len(records), "questions": len({r.question_id for r in records})}


def select(attempts: Sequence[Trajectory], cfg: FilterConfig) -> tuple[list[Trajectory], list[dict]]:
    """Kept records (sorted by question id) and the funnel: one row per stage with samples and questions left."""
    alive = sorted(attempts, key=lambda r: (r.question_id, r.metadata.get("sample", 0)))
    funnel = [_stage("generated", alive)]
    for name, passes in rules(cfg):
        alive = [r for r in alive if passes(r)]
        funnel.append(_stage(name, alive))
    by_question: dict[str, list[Trajectory]] = {}
    for r in alive:
        by_question.setdefault(r.question_id, []).append(r)
    chosen = [group[mix_seed(cfg.seed, "pick", qid) % len(group)] for qid, group in sorted(by_question.items())]
    funnel.append(_stage("one_per_question", chosen))
    one_call = sorted(
        (r for r in chosen if r.n_calls == 1), key=lambda r: mix_seed(cfg.seed, "rebalance", r.question_id)
    )
    dropped = {id(r) for r in one_call[round(cfg.one_call_keep * len(one_call)) :]}
    kept = [r for r in chosen if id(r) not in dropped]
    funnel.append(_stage("rebalanced", kept))
    return kept, funnel
