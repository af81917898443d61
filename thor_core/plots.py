"""Figure pieces shared by the reports: saving a figure, and best-of-N curves.

Covered: ``save_figure`` (a PNG at 120 dpi, cropped to its content, and a PDF
beside it on request; the one place the reports' figures are written) and
``plot_best_of_n_comparison`` (several runs' best-of-N curves on one plot,
notebooks 04 and 05). Figures are built with ``matplotlib.figure.Figure`` (no
pyplot state, no display needed), so they work headless and in worker threads.

Not covered: the figures of one stage (they live with its report:
``thor_core.evaluation.rungs``, ``thor_core.runs.ladder``, ...), interactive
plots, per-token statistics.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

DPI = 120


def save_figure(fig: Figure, path: str | os.PathLike, *, pdf: bool = False) -> Path:
    """Write ``fig`` to the PNG ``path`` (its folder made), and a PDF beside it when ``pdf``; returns the PNG path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target in (path, path.with_suffix(".pdf")) if pdf else (path,):
        fig.savefig(target, dpi=DPI, bbox_inches="tight")
    return path


def plot_best_of_n_comparison(
    curves: Sequence[tuple[str, list[dict[str, Any]]]],
    path: str | os.PathLike,
    paper: tuple[str, dict[int, float]] | None = None,
    pdf: bool = False,
) -> Path:
    """Several best-of-N curves on one plot: exec pass rate (solid) and majority vote (dashed) per ``(label,
    rows)``, and optionally the paper's curve ``(label, {N: accuracy %})``; a PDF beside the PNG when ``pdf``."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for i, (label, rows) in enumerate(curves):
        ns = [r["n"] for r in rows]
        ax.plot(ns, [100 * (r["exec_pass_rate"] or 0) for r in rows], "o-", color=f"C{i}", label=f"{label}: exec pass rate")  # fmt: skip
        ax.plot(ns, [100 * (r["majority_vote"] or 0) for r in rows], "s--", color=f"C{i}", label=f"{label}: majority")  # fmt: skip
    if paper is not None:
        ax.plot(list(paper[1]), list(paper[1].values()), "k*:", label=paper[0])
    ax.set_xlabel("N (samples per question)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Best-of-N: execution pass rate vs majority vote", fontsize=9)
    ax.legend(fontsize=6)
    return save_figure(fig, path, pdf=pdf)
