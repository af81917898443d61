"""The held-out before/after check that SFT (notebook 02: base vs SFT) and RL (notebook 03: start vs RL) share.

Covered:

- ``CheckParams``: the check's own settings (held-out set, samples, sampling, budget), composed with a stage's
  parameters in its notebook (``params.params_from_namespace``); the held-out set itself comes from the one rule,
  ``thor_core.data.heldout.heldout_problems``.
- ``compare_models``: two models evaluated the same way (``thor_core.evaluation.runner.evaluate``, the same
  problems and rollout seeds, no self-correction), one backend at a time so only one model is in memory. Per model:
  the share of answers with a ```python block, with at least one executed call, call success, boxed answers,
  accuracy, n; paired exact McNemar tests (``thor_core.stats``) on correctness, code-block presence and boxed answers
  over the (question, sample) pairs. Written to ``<out_dir>/before_after.json``; records under ``eval-<tag>/``
  (resumable, as ``evaluate`` is).
- ``before_after_table``: the report as Markdown.

Not covered: benchmark evaluation (notebook 04), self-correction in the check, significance beyond the paired tests.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thor_core import tir
from thor_core.backends import make_backend
from thor_core.engine.rollout import RolloutConfig, rollout_config
from thor_core.evaluation.runner import evaluate
from thor_core.files import write_json_atomic
from thor_core.stats import paired_outcomes

RESULT = "before_after.json"


@dataclass
class CheckParams:
    """Settings of the held-out before/after check (notebooks 02 and 03; the ``eval_*`` keys of their profiles)."""

    heldout_n: int = field(default=20, metadata={"help": "held-out procedural problems for the check (0: skip it)"})
    heldout_seed: int = field(default=9001, metadata={"help": "their generator seed (differs from training's)"})
    eval_k: int = field(default=2, metadata={"help": "samples per held-out problem"})
    eval_temperature: float = field(default=0.6, metadata={"help": "sampling temperature of the check"})
    eval_max_new_tokens: int = field(default=1024, metadata={"help": "completion budget, tool outputs included"})
    eval_max_tool_rounds: int = field(default=4, metadata={"help": "code calls per answer"})
    eval_seed: int = field(default=0, metadata={"help": "rollout seed, the same for both models"})

    def rollout_config(self) -> RolloutConfig:
        return rollout_config(self, prefix="eval_")


def answer_metrics(records) -> dict[str, Any]:
    """Shares over graded records: code block written, call made, calls succeeding, boxed answer, correct."""
    n = len(records)
    calls = [c for r in records for c in r.tool_calls]

    def share(xs):
        return sum(xs) / n if n else None

    return {
        "n": n,
        "code_block_rate": share(has_code_block(r) for r in records),
        "with_calls_rate": share(r.n_calls > 0 for r in records),
        "call_success_rate": sum(c.success for c in calls) / len(calls) if calls else None,
        "calls": len(calls),
        "boxed_rate": share(has_boxed(r) for r in records),
        "accuracy": share(bool(r.correct) for r in records),
    }


def has_code_block(record) -> bool:
    return record.n_calls > 0 or tir.CODE_FENCE in record.completion_text


def has_boxed(record) -> bool:
    return tir.last_boxed(record.completion_text) is not None


def _key(record) -> tuple[str, int]:
    return record.question_id, int(record.metadata.get("sample", 0))


def paired_tests(before, after) -> dict[str, Any]:
    """McNemar exact tests of after against before on correctness, code blocks and boxed answers."""
    tests = {"correct": lambda r: bool(r.correct), "code_block": has_code_block, "boxed": has_boxed}
    return {
        name: paired_outcomes({_key(r): f(r) for r in before}, {_key(r): f(r) for r in after})
        for name, f in tests.items()
    }


def compare_models(
    models: dict[str, str],
    problems,
    note: dict[str, Any],
    check: CheckParams,
    backend: str,
    out_dir,
    sandbox,
    grader=None,
    mode: str = "tir",
) -> dict[str, Any]:
    """Two models on the same held-out problems and rollout seeds, one after the other; ``before_after.json``.

    ``models``: tag -> model, the first is "before", the second "after"; ``note``: how the held-out set was made
    (``heldout_problems``'s note), recorded with the result; ``backend``: the engine both run on.
    """
    out_dir = Path(out_dir)
    cfg = check.rollout_config()
    results, walls = {}, {}
    for tag, model in models.items():
        t0 = time.monotonic()
        with make_backend(backend, model) as engine:
            result = evaluate(
                engine, sandbox, ["heldout"], check.eval_k, mode, False, cfg, out_dir / f"eval-{tag}",
                problems={"heldout": problems}, grader=grader, progress=False, model=model,
            )  # fmt: skip
        results[tag], walls[tag] = result.records, round(time.monotonic() - t0, 1)
    first, second = models
    report = {
        "models": models,
        "heldout": note,
        "k": check.eval_k,
        "rollout": dataclasses.asdict(cfg),
        "before": answer_metrics(results[first]),
        "after": answer_metrics(results[second]),
        "paired": paired_tests(results[first], results[second]),
        "wall_s": walls,
    }
    write_json_atomic(out_dir / RESULT, report)
    report["records"] = results  # for display, not written
    return report


def before_after_table(report: dict[str, Any], labels: tuple[str, str]) -> str:
    """Markdown: one row per metric, the two models and the paired p-value where there is one."""
    rows = [
        ("answers with a code block", "code_block_rate", "code_block"),
        ("answers with a call", "with_calls_rate", None),
        ("calls succeeding", "call_success_rate", None),
        ("boxed answer", "boxed_rate", "boxed"),
        ("accuracy", "accuracy", "correct"),
        ("n (answers)", "n", None),
    ]

    def cell(x, key):
        return "-" if x is None else str(x) if key == "n" else f"{100 * x:.1f}%"

    lines = [f"| metric | {labels[0]} | {labels[1]} | paired p (McNemar) |", "|---|---|---|---|"]
    for label, key, test in rows:
        p_value = f"{report['paired'][test]['p_value']:.3g}" if test else ""
        lines.append(
            f"| {label} | {cell(report['before'][key], key)} | {cell(report['after'][key], key)} | {p_value} |"
        )
    return "\n".join(lines) + "\n"
