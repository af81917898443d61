"""What notebook 01 shows of a TIRGen run: the funnel and statistics as tables, figures, and records by writer.

Covered: ``statistics_of`` (what ``stats.json`` holds), ``problems_table``, ``funnel_table`` and ``stats_table`` (Markdown from ``stats.json``),
``plot_funnel`` (the funnel and the code-call histogram, the paper's figure 6,
saved as PNG and PDF), ``sources_html`` (a record with actor text, critic text
and tool outputs in different colours; inline styles only, every piece of
model text escaped, so it survives JupyterLab's sanitiser in an untrusted
notebook). Not covered: the general trajectory viewer with loss masks (issue
11's ``viewer``).
"""

from __future__ import annotations

import html
import os
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from thor_core.record import Trajectory
from thor_core.stats import pct


def statistics_of(
    attempts: list[Trajectory], kept: list[Trajectory], funnel: list[dict], n_questions: int, n_cot_dropped: int,
    wall_s: float | None,
) -> dict[str, Any]:  # fmt: skip
    """The funnel, code-call histogram, critic shares, tokens, sources, keep rate per level and kind, time."""
    t = [r.metadata.get("tirgen", {}) for r in attempts]
    judged = sum(x.get("rewritten", 0) + x.get("no_code", 0) for x in t)
    steps = sum(x.get("steps", 0) for x in t)
    sources = Counter("".join(r.token_sources or "" for r in kept))
    n_tokens = [len(r.completion_ids) for r in kept]

    def rate_by(key: str) -> dict[str, dict]:
        asked = Counter(str(r.metadata.get(key)) for r in attempts if r.metadata.get("sample", 0) == 0)
        got = Counter(str(r.metadata.get(key)) for r in kept)
        return {v: {"questions": n, "kept": got[v], "keep_rate": got[v] / n} for v, n in sorted(asked.items())}

    return {
        "questions": n_questions,
        "cot_dropped_questions": n_cot_dropped,
        "attempts": len(attempts),
        "kept": len(kept),
        "keep_rate": len(kept) / n_questions if n_questions else None,
        "funnel": [{"stage": "questions", "samples": None, "questions": n_questions}]
        + (
            [{"stage": "not_solved_by_cot", "samples": None, "questions": n_questions - n_cot_dropped}]
            if n_cot_dropped
            else []
        )
        + funnel,
        "calls_histogram": dict(sorted(Counter(r.n_calls for r in kept).items())),
        "critic": {
            "steps": steps,
            "critic_calls": sum(x.get("critic_calls", 0) for x in t),
            "rewritten": sum(x.get("rewritten", 0) for x in t),
            "no_code": sum(x.get("no_code", 0) for x in t),
            "skipped": sum(x.get("skipped", 0) for x in t),
            "cut_before_answer": sum(x.get("cut", 0) for x in t),
            "failures": dict(Counter(f for x in t for f in x.get("critic_failures", []))),
            "rewrite_share_of_judged": sum(x.get("rewritten", 0) for x in t) / judged if judged else None,
            "rewrite_share_of_steps": sum(x.get("rewritten", 0) for x in t) / steps if steps else None,
        },
        "stops": dict(Counter(x.get("stop", "") for x in t)),
        "tokens_per_kept": {
            "mean": statistics.fmean(n_tokens) if n_tokens else None,
            "median": statistics.median(n_tokens) if n_tokens else None,
            "max": max(n_tokens) if n_tokens else None,
        },
        "token_sources": {k: v / sum(sources.values()) for k, v in sorted(sources.items())} if sources else {},
        "by_level": rate_by("level"),
        "by_kind": rate_by("kind"),
        "wall_s": wall_s,
        "s_per_kept": wall_s / len(kept) if wall_s and kept else None,
    }


STYLE = {
    "a": "color:#1f2328",
    "c": "color:#0550ae;background:#ddf4ff",
    "t": "color:#57606a;background:#f6f8fa;font-style:italic",
}
LABELS = {"a": "actor", "c": "critic", "t": "tool output"}


def problems_table(problems) -> str:
    """Problems per kind (rows) and level (columns)."""
    from collections import Counter

    counts = Counter((q.metadata.get("kind", q.source), q.metadata.get("level", "-")) for q in problems)
    levels = sorted({lv for _, lv in counts}, key=str)
    head = "| kind | " + " | ".join(f"level {lv}" for lv in levels) + " |\n|---|" + "---|" * len(levels) + "\n"
    kinds = sorted({k for k, _ in counts})
    return head + "".join(f"| {k} | " + " | ".join(str(counts[k, lv]) for lv in levels) + " |\n" for k in kinds)


def funnel_table(stats: dict[str, Any]) -> str:
    rows = "".join(
        f"| {row['stage']} | {'-' if row['samples'] is None else row['samples']} | {row['questions']} |\n"
        for row in stats["funnel"]
    )
    return "| stage | samples left | questions left |\n|---|---|---|\n" + rows


def stats_table(stats: dict[str, Any]) -> str:
    c, tokens = stats["critic"], stats["tokens_per_kept"]
    sources = ", ".join(f"{LABELS[k]} {pct(v, '%')}" for k, v in stats["token_sources"].items()) or "-"
    levels = ", ".join(
        f"L{lv} {pct(v['keep_rate'], '%')} ({v['kept']}/{v['questions']})" for lv, v in stats["by_level"].items()
    )
    lines = [
        ("questions / attempts / kept", f"{stats['questions']} / {stats['attempts']} / {stats['kept']}"),
        ("keep rate (kept / questions)", pct(stats["keep_rate"], "%")),
        ("keep rate by level", levels),
        ("code calls per kept sample", ", ".join(f"{k}: {v}" for k, v in stats["calls_histogram"].items()) or "-"),
        ("actor steps / critic calls", f"{c['steps']} / {c['critic_calls']}"),
        ("critic rewrote (of steps it judged)", pct(c["rewrite_share_of_judged"], "%")),
        ("critic rewrote (of all steps)", pct(c["rewrite_share_of_steps"], "%")),
        ("critic failures", ", ".join(f"{k}: {v}" for k, v in c["failures"].items()) or "none"),
        ("tokens per kept sample (mean / median / max)", f"{tokens['mean']} / {tokens['median']} / {tokens['max']}"),
        ("who wrote the kept tokens", sources),
        ("wall time (s) / s per kept sample", f"{stats['wall_s']} / {stats['s_per_kept']}"),
    ]
    return "| statistic | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in lines)


def plot_funnel(stats: dict[str, Any], path: str | os.PathLike) -> list[Path]:
    """Funnel (samples left per stage) beside the histogram of code calls per kept sample; PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in stats["funnel"] if r["samples"] is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    ax1.barh([r["stage"] for r in rows][::-1], [r["samples"] for r in rows][::-1], color="#0969da")
    for i, r in enumerate(rows[::-1]):
        ax1.text(r["samples"], i, f" {r['samples']}", va="center", fontsize=8)
    ax1.set_xlabel("samples left")
    ax1.set_title("TIRGen filter funnel")
    hist = stats["calls_histogram"]
    ax2.bar([str(k) for k in hist], list(hist.values()), color="#1a7f37")
    ax2.set_xlabel("code calls per kept sample")
    ax2.set_ylabel("samples")
    ax2.set_title("code calls (paper fig. 6)")
    fig.tight_layout()
    path = Path(path)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in out:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return out


def sources_html(record: Trajectory, tokenizer) -> str:
    """The record's completion, each run of tokens coloured by who wrote it (see ``STYLE``)."""
    if record.token_sources is None:
        raise ValueError(f"record {record.question_id!r} has no token_sources (not a TIRGen record)")
    pieces, start = [], 0
    src, ids = record.token_sources, record.completion_ids
    for i in range(1, len(ids) + 1):
        if i == len(ids) or src[i] != src[start]:
            text = tokenizer.decode(ids[start:i], skip_special_tokens=False)
            pieces.append(f'<span style="{STYLE[src[start]]}" title="{LABELS[src[start]]}">{html.escape(text)}</span>')
            start = i
    body = "".join(pieces)
    legend = " ".join(f'<span style="{STYLE[k]};padding:0 4px">{v}</span>' for k, v in LABELS.items())
    verdict = {True: "correct", False: "wrong", None: "not graded"}[record.correct]
    meta = record.metadata.get("tirgen", {})
    head = (
        f"<b>{html.escape(record.question_id)}</b> (attempt {record.metadata.get('sample', 0)}): {verdict}, "
        f"gold <code>{html.escape(str(record.gold_answer))}</code>, answer "
        f"<code>{html.escape(str(record.final_answer))}</code>, {record.n_calls} calls, "
        f"{meta.get('rewritten', 0)} of {meta.get('steps', 0)} steps rewritten by the critic &nbsp; {legend}"
    )
    question = f'<div style="margin:4px 0"><b>Question.</b> {html.escape(record.question)}</div>'
    return (
        f'<div style="border:1px solid #d0d7de;padding:8px;margin:8px 0">{head}{question}'
        f'<pre style="white-space:pre-wrap;font-size:12px;margin:0">{body}</pre></div>'
    )
