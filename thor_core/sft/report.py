"""Notebook 02's report: the dataset overview, the loss curve, and the held-out before/after check of the checkpoint.

Covered:

- ``dataset_overview``: size, tokens, trained tokens and calls of the TIRGen SFT dataset.
- ``heldout_problems``: the check's problems by the one held-out rule (``thor_core.data.heldout``), minus every
  question the SFT dataset holds and every problem TIRGen recorded in ``tirgen_dir`` (where that run exists).
- ``before_after``: the base model and the checkpoint compared by ``thor_core.evaluation.before_after`` (TIR prompt,
  the same rollout seeds, paired McNemar tests), into ``<output_dir>/before_after.json`` and ``eval-base/``,
  ``eval-sft/``.
- ``plot_loss``: the loss curve from ``loss.jsonl`` as a PNG.

Not covered: benchmark evaluation (notebook 04 does that).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from thor_core.data import heldout
from thor_core.data.benchmarks import Problem
from thor_core.evaluation.before_after import CheckParams, compare_models
from thor_core.evaluation.before_after import before_after_table as evaluation_table
from thor_core.files import repo_path
from thor_core.plots import save_figure
from thor_core.sft.config import SFTParams
from thor_core.sft.folder import read_loss


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


def heldout_problems(p: SFTParams, check: CheckParams, dataset) -> tuple[list[Problem], dict[str, Any]]:
    """The check's held-out problems (``data.heldout``): none of the SFT dataset's questions, none of TIRGen's
    problems (where its run folder recorded them)."""
    seen = [
        Problem(id=str(qid), question=m[1]["content"], answer="", source="sft", split="train")
        for qid, m in zip(dataset["question_id"], dataset["messages"])
    ]
    return heldout.heldout_problems(
        check.heldout_n, check.heldout_seed, {"sft dataset": seen, **heldout.recorded_problems([p.tirgen_dir])}
    )


def before_after(
    p: SFTParams, check: CheckParams, backend: str, checkpoint: str | os.PathLike, dataset, sandbox, grader=None
) -> dict[str, Any]:
    """The base model and the checkpoint on held-out problems (``evaluation.before_after.compare_models``) into
    ``p.output_dir``; ``before_after.json``'s content."""
    problems, note = heldout_problems(p, check, dataset)
    models = {"base": p.model, "sft": str(checkpoint)}
    return compare_models(models, problems, note, check, backend, repo_path(p.output_dir), sandbox, grader)


def before_after_table(report: dict[str, Any]) -> str:
    return evaluation_table(report, labels=("base", "SFT"))


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
    return save_figure(fig, path)
