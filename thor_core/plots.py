"""Figures from evaluation summaries (``thor_core.evaluation``), saved as PNG.

Covered: accuracy per benchmark for several runs side by side (e.g. TIR with
and without self-correction), the tool-success x correctness 2x2 heatmap, and
the best-of-N curve (execution pass rate, majority vote, single sample,
oracle), and several runs' best-of-N curves on one plot (notebooks 04 and 05). Each function takes summaries (the dicts ``evaluate`` returns and
writes as JSON), saves one PNG and returns its path; ``save_figures`` makes all
that apply. Figures are built with ``matplotlib.figure.Figure`` (no pyplot
state, no display needed), so they work headless and in worker threads.

Not covered: interactive plots, confidence intervals, per-token statistics.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

DPI = 120


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_accuracy(summaries: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Grouped bars: Avg@k (%) per benchmark and overall, one bar per run (its tag)."""
    names = list(dict.fromkeys(b for s in summaries for b in s["benchmarks"])) + ["overall"]
    fig = Figure(figsize=(max(5.0, 1.4 * len(names) + 1), 3.6))
    ax = fig.subplots()
    width = 0.8 / max(len(summaries), 1)
    for i, s in enumerate(summaries):
        values = [
            100 * ((s["overall"] if b == "overall" else s["benchmarks"].get(b, {})).get("avg@k") or 0.0) for b in names
        ]
        xs = [j + (i - (len(summaries) - 1) / 2) * width for j in range(len(names))]
        bars = ax.bar(xs, values, width, label=f"{s['tag']} (Avg@{s['k']})")
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, max(10.0, ax.get_ylim()[1] * 1.1))
    ax.set_title("Accuracy per benchmark")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_tool_correctness(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Heatmap of (all calls succeeded / some failed) x (correct / wrong): counts, coloured by share of row."""
    t = summary["tool_vs_correct"]
    cells = [[t["ok_correct"], t["ok_wrong"]], [t["fail_correct"], t["fail_wrong"]]]
    shares = [[count / sum(row) if sum(row) else 0.0 for count in row] for row in cells]
    fig = Figure(figsize=(4.4, 3.4))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of row")
    for i, row in enumerate(cells):
        for j, count in enumerate(row):
            text = f"{count}\n{100 * shares[i][j]:.0f}% of row" if sum(row) else "0"
            ax.text(j, i, text, ha="center", va="center", color="white" if shares[i][j] > 0.6 else "black")
    ax.set_xticks([0, 1], ["correct", "wrong"])
    ax.set_yticks([0, 1], ["all calls ok", "a call failed"])
    chi2 = f"chi2 = {t['chi2']:.1f}, p = {t['p_value']:.2g}" if t["chi2"] is not None else "chi2 undefined"
    ax.set_title(f"Tool success vs correctness ({summary['tag']})\n{chi2}", fontsize=9)
    return _save(fig, path)


def plot_best_of_n(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Accuracy (%) against N for each selector."""
    rows = summary["best_of_n"]
    if not rows:
        raise ValueError(f"summary {summary.get('tag')!r} has no best-of-N curve (needs best_of_n and k >= N)")
    fig = Figure(figsize=(4.6, 3.4))
    ax = fig.subplots()
    ns = [r["n"] for r in rows]
    for key, label, style in (
        ("exec_pass_rate", "exec pass rate (THOR)", "o-"),
        ("majority_vote", "majority vote", "s--"),
        ("single", "single sample", ":"),
        ("oracle", "oracle (pass@N)", "^-."),
    ):
        ax.plot(ns, [100 * (r[key] or 0.0) for r in rows], style, label=label)
    ax.set_xticks(ns)
    ax.set_xlabel("N (samples per question)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Best-of-N ({summary['tag']})", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


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
    if pdf:
        fig.savefig(Path(path).with_suffix(".pdf"), bbox_inches="tight")
    return _save(fig, path)


def save_figures(summaries: Sequence[dict[str, Any]], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Every figure that applies, as ``out_dir/<name>.png``; returns name -> path.

    ``accuracy`` compares all runs; ``tool_vs_correct-<tag>`` and
    ``best_of_n-<tag>`` are made for each run that has calls / a curve.
    """
    out_dir = Path(out_dir)
    figures = {"accuracy": plot_accuracy(summaries, out_dir / "accuracy.png")}
    for s in summaries:
        if s["tool_vs_correct"]["n"]:
            figures[f"tool_vs_correct-{s['tag']}"] = plot_tool_correctness(
                s, out_dir / f"tool_vs_correct-{s['tag']}.png"
            )
        if s.get("best_of_n"):
            figures[f"best_of_n-{s['tag']}"] = plot_best_of_n(s, out_dir / f"best_of_n-{s['tag']}.png")
    return figures
