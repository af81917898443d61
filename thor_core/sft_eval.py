"""Notebook 02's parameters and its before/after check of an SFT checkpoint.

Covered:

- ``NotebookParams``: ``SFTParams`` plus the settings of the check and the
  run folder (``run_dir``, given by the runner); ``training(out_dir)`` gives
  the ``SFTParams`` that train into it.
- Held-out problems: procedural problems (``thor_core.problems``) under a seed
  of their own, minus every question the SFT dataset holds and every problem
  TIRGen used (``thor_core.tirgen.load_problems`` on ``tirgen_dir`` where that
  run exists), compared by normalised text (``find_overlap``).
- ``before_after``: the base model and the checkpoint evaluated the same way
  (``thor_core.evaluation.evaluate``, TIR prompt, no self-correction, the same
  rollout seeds), one backend at a time so only one model is in memory. Per
  model: the share of answers with a ```python block, of answers with at least
  one executed call, call success, the share with a boxed answer, accuracy, n;
  paired exact McNemar tests (``thor_core.stats``) on correctness, code-block
  presence and boxed answers over the (question, sample) pairs. Written to
  ``<run_dir>/before_after.json``; records under ``eval-base/`` and ``eval-sft/``
  (resumable, as ``evaluate`` is).
- ``plot_loss``: the loss curve from ``loss.jsonl`` as a PNG.

Not covered: benchmark evaluation (notebook 04 does that), self-correction in
the check, significance beyond the paired tests.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from thor_core import tir
from thor_core.data import Problem
from thor_core.runs import repo_path, write_json_atomic
from thor_core.sft import SFTParams
from thor_core.sft_run import read_loss
from thor_core.stats import paired_outcomes

RESULT = "before_after.json"


@dataclass
class NotebookParams(SFTParams):
    """Parameters of notebook 02 (params/*/02_sft.yaml): training, then the before/after check."""

    heldout_n: int = field(default=20, metadata={"help": "held-out procedural problems for the check (0: skip it)"})
    heldout_seed: int = field(default=9001, metadata={"help": "their generator seed (differs from TIRGen's)"})
    eval_k: int = field(default=2, metadata={"help": "samples per held-out problem"})
    eval_temperature: float = field(default=0.6, metadata={"help": "sampling temperature of the check"})
    eval_max_new_tokens: int = field(default=1024, metadata={"help": "completion budget, tool outputs included"})
    eval_max_tool_rounds: int = field(default=4, metadata={"help": "code calls per answer"})
    eval_seed: int = field(default=0, metadata={"help": "rollout seed, the same for both models"})
    backend: Literal["auto", "hf", "vllm"] = field(default="hf", metadata={"help": "generation backend of the check"})
    show_trajectories: int = field(default=2, metadata={"help": "checkpoint answers rendered in the notebook"})
    run_dir: str | None = field(default=None, metadata={"help": "run folder (run_notebook sets it)"})

    def training(self, out_dir: str | os.PathLike) -> SFTParams:
        """The ``SFTParams`` part, training into ``out_dir``."""
        names = {f.name for f in dataclasses.fields(SFTParams)}
        return SFTParams(**{**{n: getattr(self, n) for n in names}, "output_dir": str(out_dir)})

    def rollout_config(self):
        return check_rollout_config(self)


def check_rollout_config(p):
    """The held-out check's engine settings from ``eval_*`` fields (notebooks 02 and 03)."""
    from thor_core.backends.base import SamplingParams
    from thor_core.rollout import RolloutConfig

    return RolloutConfig(
        max_new_tokens=p.eval_max_new_tokens,
        max_tool_rounds=p.eval_max_tool_rounds,
        sampling=SamplingParams(temperature=p.eval_temperature),
        seed=p.eval_seed,
    )


def dataset_overview(dataset) -> dict[str, Any]:
    """Size, tokens, trained tokens and tool-call counts of a TIRGen SFT dataset."""
    lengths = [len(x) for x in dataset["input_ids"]]
    calls = list(dataset["n_calls"]) if "n_calls" in dataset.column_names else []
    return {
        "examples": len(dataset),
        "tokens": sum(lengths),
        "max_tokens": max(lengths, default=0),
        "mean_tokens": round(sum(lengths) / len(lengths), 1) if lengths else None,
        "trained_tokens": sum(sum(t != -100 for t in row) for row in dataset["labels"]),
        "tool_output_tokens": sum(sum(row) for row in dataset["tool_output_mask"])
        if "tool_output_mask" in dataset.column_names
        else None,
        "mean_calls": round(sum(calls) / len(calls), 2) if calls else None,
    }


def _tirgen_problems(tirgen_dir: Path) -> list[Problem] | None:
    """TIRGen's problems where its run folder and loader exist, else None."""
    try:
        from thor_core.tirgen import load_problems
    except ImportError:
        return None
    try:
        return list(load_problems(tirgen_dir))
    except FileNotFoundError:
        return None


def heldout_problems(p: NotebookParams, dataset) -> tuple[list[Problem], dict[str, Any]]:
    """``p.heldout_n`` generated problems that neither the dataset nor TIRGen's run holds, and a note of what was excluded."""
    from thor_core.problems import find_overlap, generate_problems

    seen = [
        Problem(id=str(qid), question=m[1]["content"], answer="", source="sft", split="train")
        for qid, m in zip(dataset["question_id"], dataset["messages"])
    ]
    tirgen = _tirgen_problems(repo_path(p.tirgen_dir))
    references = [seen] + ([tirgen] if tirgen else [])
    candidates = generate_problems(2 * p.heldout_n + 20, seed=p.heldout_seed)
    clashes = {a for a, _ in find_overlap(candidates, references)}
    kept = [c for c in candidates if c.id not in clashes][: p.heldout_n]
    note = {
        "seed": p.heldout_seed,
        "n": len(kept),
        "excluded": len(clashes & {c.id for c in candidates}),
        "checked_against": ["sft dataset"] + (["tirgen problems"] if tirgen else []),
    }
    return kept, note


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
    models: dict[str, str], problems, note: dict[str, Any], p, out_dir, sandbox, grader=None, mode: str = "tir"
) -> dict[str, Any]:
    """Two models on the same held-out problems and rollout seeds, one after the other; ``before_after.json``.

    ``models``: tag -> model, the first is "before", the second "after". ``p`` gives the check's settings
    (``backend``, ``eval_k``, ``rollout_config()``). Notebooks 02 (base vs SFT) and 03 (start vs RL) use it.
    """
    from thor_core import evaluation
    from thor_core.backends import make_backend

    out_dir = Path(out_dir)
    results, walls = {}, {}
    for tag, model in models.items():
        t0 = time.monotonic()
        with make_backend(p.backend, model) as backend:
            result = evaluation.evaluate(
                backend,
                sandbox,
                ["heldout"],
                p.eval_k,
                mode,
                False,
                p.rollout_config(),
                out_dir / f"eval-{tag}",
                problems={"heldout": problems},
                grader=grader,
                progress=False,
                model=model,
            )
        results[tag], walls[tag] = result.records, round(time.monotonic() - t0, 1)
    first, second = models
    report = {
        "models": models,
        "heldout": note,
        "k": p.eval_k,
        "rollout": dataclasses.asdict(p.rollout_config()),
        "before": answer_metrics(results[first]),
        "after": answer_metrics(results[second]),
        "paired": paired_tests(results[first], results[second]),
        "wall_s": walls,
    }
    write_json_atomic(out_dir / RESULT, report)
    report["records"] = results  # for display, not written
    return report


def before_after(
    p: NotebookParams, out_dir: str | os.PathLike, checkpoint: str | os.PathLike, dataset, sandbox, grader=None
) -> dict[str, Any]:
    """Evaluate base and checkpoint on held-out problems; write and return ``before_after.json``'s content."""
    problems, note = heldout_problems(p, dataset)
    return compare_models({"base": p.model, "sft": str(checkpoint)}, problems, note, p, out_dir, sandbox, grader)


def before_after_table(report: dict[str, Any], labels: tuple[str, str] = ("base", "SFT")) -> str:
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


def plot_loss(out_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """The training loss per step from ``<out_dir>/loss.jsonl``, saved as PNG (default ``<out_dir>/loss.png``)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = read_loss(out_dir)
    path = Path(path) if path is not None else Path(out_dir) / "loss.png"
    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.subplots()
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker="o" if len(rows) < 30 else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (completion tokens)")
    ax.set_title("SFT training loss")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
