"""Evaluation reports: Markdown tables of summaries and trajectories (moved out of ``thor_core.evaluation.runner``).

Covered: ``describe`` (one line naming a run), ``benchmark_table`` (Avg@k, pass@k, maj@k per
benchmark with their bootstrap intervals, ``metric_cell``, the mean over benchmarks and the pooled row),
``tool_table`` (the 2x2 with chi-square), ``best_of_n_table`` (with ``no_call_note``),
``summary_markdown`` (one run's ``summary.md``), ``render_trajectory``
(Markdown of one record, failed calls and discarded retries labelled) and
``pick_examples``. All take the summary dicts ``metrics.summarize`` builds,
or ``Trajectory`` records; nothing here calls a model.

Not covered: figures (``thor_core.plots``, ``thor_core.evaluation.rungs``), HTML (``thor_core.viewer``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from thor_core.record import Trajectory
from thor_core.stats import pct


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def describe(summary: dict[str, Any]) -> str:
    """One line naming a run: ``tir-sc: TIR, self-correction on, k=4, 2048 tokens, hf``."""
    mode = {"tir": "TIR", "cot": "CoT", "code": "code"}.get(summary.get("mode"), summary.get("mode"))
    sc = ", self-correction on" if summary.get("self_correction") else ""
    rollout = summary.get("rollout") or {}
    return (
        f"{summary.get('tag')}: {mode}{sc}, k={summary['k']}, max_new_tokens={rollout.get('max_new_tokens')}, "
        f"temperature={(rollout.get('sampling') or {}).get('temperature')}, backend {summary.get('backend')}"
    )


def metric_cell(m: dict[str, Any], name: str) -> str:
    """``25.0 [10.0, 40.0]``: a metric of ``metrics.group_metrics`` in % with its 95% bootstrap interval (``-`` when
    absent; a summary written before the intervals existed shows the value alone)."""
    value, ci = m.get(name), m.get(f"{name}_ci")
    if value is None:
        return "-"
    return pct(value) + (f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else "")


def benchmark_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per benchmark, the mean over benchmarks and the pooled row (accuracies and rates in %;
    Avg@k, pass@k and maj@k with 95% bootstrap intervals over problems)."""
    k = summary["k"]
    head = (
        f"| benchmark | problems | samples | Avg@{k} | pass@{k} | maj@{k} | answered | truncated | policy tokens "
        "| calls/answer | tool success | timeouts | corrections/answer |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = "".join(
        f"| {name} | {m['problems']} | {m['samples']} | {metric_cell(m, 'avg@k')} | {metric_cell(m, 'pass@k')} "
        f"| {metric_cell(m, 'maj@k')} | {pct(m['answered_rate'])} | {pct(m['truncated_rate'])} "
        f"| {_num(m['mean_policy_tokens'], 0)} | {_num(m['calls_per_answer'])} | {pct(m['tool_success_rate'])} "
        f"| {pct(m['timeout_rate'])} | {_num(m['corrections_per_answer'])} |\n"
        for name, m in [*summary["benchmarks"].items(), ("**all answers pooled**", summary["overall"])]
    )
    macro = summary.get("macro")
    if macro and macro["benchmarks"] > 1:
        rows += (
            f"| **mean of {macro['benchmarks']} benchmarks** | | | {metric_cell(macro, 'avg@k')} "
            f"| {metric_cell(macro, 'pass@k')} | {metric_cell(macro, 'maj@k')} | | | | | | | |\n"
        )
    return head + rows


def tool_table(summary: dict[str, Any]) -> str:
    """Markdown: the 2x2 table of tool success against correctness, with chi-square."""
    t = summary["tool_vs_correct"]
    if not t["n"]:
        return "No trajectory made a code call.\n"
    test = (
        f"chi2 = {t['chi2']:.1f} (df = 1, no continuity correction), p = {t['p_value']:.3g}"
        if t["chi2"] is not None
        else "chi2 undefined (a row or column is empty)"
    )
    return (
        f"Trajectories with at least one code call: {t['n']}\n\n"
        "| | correct | wrong |\n|---|---|---|\n"
        f"| all calls succeeded | {t['ok_correct']} | {t['ok_wrong']} |\n"
        f"| some call failed | {t['fail_correct']} | {t['fail_wrong']} |\n\n{test}\n"
    )


def best_of_n_table(summary: dict[str, Any]) -> str:
    """Markdown: accuracy of each selector per N (%), or a note when there is no curve."""
    rows = summary.get("best_of_n")
    if not rows:
        return "Best-of-N not computed (needs best_of_n and k >= N).\n"
    head = "| N | problems | exec pass rate | majority vote | single sample | oracle (pass@N) |\n|---|---|---|---|---|---|\n"
    return (
        head
        + "".join(
            f"| {r['n']} | {r['problems']} | {pct(r['exec_pass_rate'])} | {pct(r['majority_vote'])} "
            f"| {pct(r['single'])} | {pct(r['oracle'])} |\n"
            for r in rows
        )
        + f"\n{no_call_note(summary)}\n"
    )


def no_call_note(summary: dict[str, Any]) -> str:
    """One line: which score an answer without code calls got in the execution pass rate (docs/METHOD.md §5)."""
    score = summary.get("no_call_score", 0.0)
    rule = "the authors' script" if score == 1.0 else ("the kit's default" if score == 0.0 else "set by hand")
    return (
        f"Execution pass rate: an answer without code calls scores {score:g} ({rule}); ties go to majority vote "
        "among the tied answers, then to the first in sampling order."
    )


def summary_markdown(summary: dict[str, Any], level: int = 1) -> str:
    """The whole summary of one run as Markdown, its title at heading ``level``."""
    h, o = "#" * level, summary["overall"]
    return (
        f"{h} Evaluation {describe(summary)}\n\n"
        f"{summary.get('new', 0)} new and {summary.get('resumed', 0)} resumed records; {summary.get('wall_s', 0)} s "
        f"in this call, {summary.get('wall_s_total', 0)} s with the calls it resumed.\n\n"
        f"{h}# Per benchmark\n\n{benchmark_table(summary)}\n"
        f"Overall: {o['calls_per_answer'] or 0:.2f} calls per answer, tool success {pct(o['tool_success_rate'])}%, "
        f"attempt success (discarded retries included) {pct(o['attempt_success_rate'])}%, "
        f"timeouts {pct(o['timeout_rate'])}%, macro Avg@{summary['k']} {pct(summary['macro_avg@k'])}.\n\n"
        f"{h}# Tool success vs correctness\n\n{tool_table(summary)}\n"
        f"{h}# Best-of-N\n\n{best_of_n_table(summary)}"
    )


# ------------------------------------------------------------ trajectories

_OUTPUT_BLOCK = re.compile(r"(?m)^```output\n.*?^```[ \t]*$", re.S)


def render_trajectory(record: Trajectory, max_chars: int = 6000) -> str:
    """Markdown of one record: question, gold and answer, then the completion with every
    output block labelled (call i ok / FAILED / timed out) and each retry that
    self-correction discarded shown, with its code and error, before the call that replaced it.

    Completions longer than ``max_chars`` keep their head and tail.
    """
    text = record.completion_text
    calls = record.tool_calls
    blocks = list(_OUTPUT_BLOCK.finditer(text))
    inserts: list[tuple[int, str]] = []
    for i, (m, call) in enumerate(zip(blocks, calls, strict=False)):
        status = "TIMED OUT" if call.timed_out else ("ok" if call.success else "FAILED")
        inserts.append((m.end(), f"\n> *call {i + 1}: {status} ({call.duration_s:.2f} s)*\n"))
    for corr in record.corrections:
        after = [j for j, c in enumerate(calls) if c.code_span[0] >= corr.at_token]
        if after and after[0] < len(blocks):
            pos = text.rfind("```python", 0, blocks[after[0]].start())
            pos = pos if pos >= 0 else blocks[after[0]].start()
        else:
            pos = len(text)
        inserts.append((pos, _render_retry(corr)))
    for pos, note in sorted(inserts, key=lambda x: x[0], reverse=True):
        text = text[:pos] + note + text[pos:]
    if len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + f"\n\n*[... {len(text) - max_chars} characters cut ...]*\n\n" + text[-half:]
    verdict = {True: "correct", False: "wrong", None: "not graded"}[record.correct]
    n_ok = sum(c.success for c in calls)
    return (
        f"### {record.question_id} (sample {record.metadata.get('sample', 0)}): {verdict}\n\n"
        f"**Question.** {record.question.strip()}\n\n"
        f"**Gold** `{record.gold_answer}` / **answer** `{record.final_answer}` / finish `{record.finish_reason}` / "
        f"{record.n_policy_tokens} policy tokens / calls {n_ok}/{len(calls)} ok / {len(record.corrections)} retries\n\n"
        f"---\n\n{text}\n\n---\n"
    )


def _render_retry(corr) -> str:
    return (
        "\n> **self-correction:** a failed call was discarded and regenerated. Dropped code:\n>\n"
        + "".join(f">     {line}\n" for line in corr.code.splitlines())
        + f">\n> error: `{corr.observation.strip()}`\n\n"
    )


def pick_examples(records: Sequence[Trajectory], n: int) -> list[Trajectory]:
    """Up to ``n`` records worth reading: retries first, then failed calls, then any calls; a correct and a wrong one first."""
    ranked = sorted(
        records, key=lambda r: (bool(r.corrections), r.n_failed_calls > 0, bool(r.tool_calls)), reverse=True
    )
    first = [next((r for r in ranked if bool(r.correct) == want), None) for want in (True, False)]
    picked = {id(r): r for r in first if r is not None}
    for r in ranked:
        picked.setdefault(id(r), r)
    return list(picked.values())[:n]
