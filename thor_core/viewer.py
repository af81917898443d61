"""The trajectory viewer: records rendered as HTML a person can read.

A ``Trajectory`` becomes one self-contained HTML fragment: a header (question,
gold and final answer, a correct/incorrect badge, finish reason, tool calls
ok/failed, and RL's ``reward``, ``advantage``, ``rl_level``, ``group`` and
``loss_start`` when ``metadata`` has them), then the completion in order as
steps, each a collapsible ``<details>``: reasoning text, the executed code
(highlighted with pygments), its output block. A failed call has a red border
and a label; a self-correction retry (what ``corrections`` kept of the dropped
path) is shown, marked as retried, where it was cut. TIRGen records tint the
text by who wrote it (actor, critic, tool) with a legend. ``children``
renders step-level regenerations under their parent; steps wholly inside a
record's given prefix (before ``loss_start``) start collapsed. The token view
shows every completion token tinted by whether it trains (``mask == 1``, index
>= ``loss_start``, and for RL samples a row of the update: a record with
``metadata["rl_dropped"]`` trains nothing).

The per-token audit (RL samples the update trained on: ``Trajectory.trainer_logprobs``
and ``entropy``; shown by default for them): the same tokens in four switchable
colourings, each a ``<details>`` of one accordion (``name=``: opening one
closes the others; no script needed; JupyterLab's sanitiser, for an untrusted
notebook, drops ``name`` and ``data-view``, and each colouring then opens on its own): mask (what trains), advantage (green
positive, red negative, on the trained tokens), mismatch (|engine - trainer|
log-prob, white to amber up to ``mismatch_threshold``) and entropy (white to
purple up to the record's largest). Tokens past the threshold are flagged in
every colouring (a red outline, class ``thor-flag``; red in the mismatch colouring) and counted in each summary; each
token's tooltip holds its numbers.

With a tokenizer the text is cut exactly at the token spans of the record;
without one the viewer parses ``completion_text`` for fenced blocks, matches
python blocks to ``tool_calls`` by their code, places retries before the next
call (token positions have no character offsets then), shows no source tints
and no token view.

Only inline ``style=`` attributes: no ``<style>`` or ``<script>`` (JupyterLab's
sanitiser drops them in untrusted notebooks; it keeps ``details``, ``summary``,
``pre``, ``table``, ``style`` and ``title``). All model text is escaped.
Not covered: the prompt (only ``prompt_ids`` are kept), editing,
search or filtering; ``metadata["step_regenerations"]`` is not read (pass the
child records as ``children``).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable
from pathlib import Path

from thor_core import tir
from thor_core.record import MISMATCH_THRESHOLD, TOKEN_SOURCES, Trajectory

SOURCE_COLOURS = {"a": "#e3edfd", "c": "#fdf0c4", "t": "#ececec"}
TRAINED_COLOUR = "#b7e4c0"  # token view: this token's loss counts
PREFIX_COLOUR = "#c9c9c9"  # token view: given prefix (index < loss_start), never trains
INSERTED_COLOUR = "#ededed"  # token view: inserted tool output (mask 0)
DROPPED_COLOUR = "#f6d5d1"  # token view: sampled, but the record was not a row of the update (rl_dropped)
POSITIVE, NEGATIVE, MISMATCH, ENTROPY = "#1e8e3e", "#d93025", "#f9ab00", "#a142f4"  # audit scales, from white
FLAG = "#d93025"  # audit: |engine - trainer| past the threshold
AUDIT_VIEWS = ("mask", "advantage", "mismatch", "entropy")
FAIL = "#d93025"
OK = "#1e8e3e"
RETRY = "#e8710a"
_FONT = "font-family:system-ui,-apple-system,Segoe UI,sans-serif;font-size:14px;color:#202124"
_MONO = "font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px"
_PRE = f"white-space:pre-wrap;word-break:break-word;margin:4px 0;padding:6px 8px;{_MONO}"
_SUMMARY = "cursor:pointer;font-weight:600;padding:2px 0"
_RL_KEYS = (
    "reward",
    "advantage",
    "rl_level",
    "group",
    "loss_start",
    "rl_dropped",
    "infra_failure",
)  # shown in the header when metadata has them


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _highlight(code: str) -> str:
    from pygments import highlight  # comes with ipython
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return highlight(code, PythonLexer(), HtmlFormatter(noclasses=True, nowrap=True, style="default")).rstrip("\n")


def _label(text: str, colour: str) -> str:
    return (
        f'<span style="background:{colour};color:#fff;border-radius:3px;padding:0 6px;'
        f'font-size:12px;font-weight:600">{_esc(text)}</span>'
    )


def _legend(head: str, entries) -> str:
    swatch = '<span style="background:{};border:1px solid #bbb;padding:0 6px;margin-right:8px">{}</span>'
    return f'<div style="margin:4px 0">{head}' + "".join(swatch.format(c, _esc(t)) for c, t in entries) + "</div>"


# -- cutting a record into items --------------------------------------------
# items: ("text", [(source | None, str)]), ("code", code, call | None, source), ("output", call),
# ("retry", correction), ("mark", message)


def _items_from_tokens(rec: Trajectory, tok) -> list[tuple]:
    ids, src = rec.completion_ids, rec.token_sources
    dec = lambda a, b: tok.decode(ids[a:b], skip_special_tokens=False)  # noqa: E731
    events, items = _events(rec), []

    def text(a: int, b: int) -> None:
        while events and events[0][0] <= b:
            pos = max(a, events[0][0])
            runs(a, pos)
            items.append(events.pop(0)[2])
            a = pos
        runs(a, b)

    def runs(a: int, b: int) -> None:
        out, i = [], a
        while i < b:
            j = i + 1
            while src and j < b and src[j] == src[i]:
                j += 1
            out.append((src[i] if src else None, dec(i, j)))
            i = j
        if out:
            items.append(("text", out))

    cursor = 0
    for call in sorted(rec.tool_calls, key=lambda c: c.code_span[0]):
        (cs, ce), (os_, oe) = call.code_span, call.output_span
        text(cursor, cs)
        span = dec(cs, ce)
        fences = tir.fence_lines(span)  # the span's text before the opening fence belongs to the reasoning
        if fences and fences[0][0] > 0 and span[: fences[0][0]].strip():
            items.append(("text", [(src[cs] if src else None, span[: fences[0][0]])]))
        items.append(("code", call.code, call, _majority(src, cs, ce)))
        if oe > os_:
            text(ce, os_)
            items.append(("output", call))
        cursor = max(ce, oe)
    text(cursor, len(ids))
    items.extend(e[2] for e in events)
    return items


def _items_from_text(rec: Trajectory) -> list[tuple]:
    text, fences = rec.completion_text, tir.fence_lines(rec.completion_text)
    calls = sorted(rec.tool_calls, key=lambda c: c.code_span[0])
    events, items = _events(rec), []
    cursor, k, last_call = 0, 0, None
    for i in range(0, len(fences) - 1, 2):
        (start, open_end, lang), (close_start, close_end, close_lang) = fences[i], fences[i + 1]
        if close_lang or lang not in tir.CODE_LANGS | {"output"}:
            continue
        body = text[open_end:close_start].strip("\n")
        if text[cursor:start].strip():
            items.append(("text", [(None, text[cursor:start])]))
        if lang == "output" and last_call is not None:
            items.append(("output", last_call))
            last_call = None
        elif lang == "output":
            items.append(("text", [(None, text[start:close_end])]))
        else:
            call = calls[k] if k < len(calls) and calls[k].code.strip() == body.strip() else None
            while call is not None and events and events[0][0] <= call.code_span[0]:
                items.append(events.pop(0)[2])
            k += call is not None
            items.append(("code", body, call, None))
            last_call = call
        cursor = close_end
    if text[cursor:].strip():
        items.append(("text", [(None, text[cursor:])]))
    items.extend(e[2] for e in events)
    return items


def _loss_start(rec: Trajectory) -> int:
    return int(rec.metadata.get("loss_start", 0) or 0)


def _events(rec: Trajectory) -> list[tuple]:
    """(token position, order, item) of the retries and the loss_start marker, in order."""
    events = [(c.at_token, 0, ("retry", c)) for c in rec.corrections]
    if 0 < (start := _loss_start(rec)) <= len(rec.completion_ids):
        events.append((start, 1, ("mark", f"training starts here (token {start}); everything above is a given prefix")))
    return sorted(events, key=lambda e: e[:2])


def _majority(src: str | None, a: int, b: int) -> str | None:
    return max(TOKEN_SOURCES, key=src[a:b].count) if src and b > a else None


def _steps(items: list[tuple]) -> list[list[tuple]]:
    """A new step starts at the first reasoning or retry after a code or output block."""
    steps: list[list[tuple]] = [[]]
    for it in items:
        if steps[-1] and steps[-1][-1][0] in ("code", "output") and it[0] not in ("code", "output"):
            steps.append([])
        steps[-1].append(it)
    return [s for s in steps if s]


# -- rendering --------------------------------------------------------------
def _render_item(it: tuple) -> str:
    kind = it[0]
    if kind == "text":
        tint = '<span style="background:{}" title="{}">{}</span>'
        parts = [_esc(t) if s is None else tint.format(SOURCE_COLOURS[s], TOKEN_SOURCES[s], _esc(t)) for s, t in it[1]]
        return f'<div style="white-space:pre-wrap;word-break:break-word;margin:4px 0;line-height:1.45">{"".join(parts)}</div>'
    if kind == "code":
        _, code, call, src = it
        if call is None:
            colour, label = "#9aa0a6", _label("not executed", "#9aa0a6")
        elif call.success:
            colour, label = OK, _label("code · ok", OK)
        else:
            colour, label = FAIL, _label("code · call failed" + (" (timed out)" if call.timed_out else ""), FAIL)
        who = f" <span style='color:#5f6368;font-size:12px'>written by {TOKEN_SOURCES[src]}</span>" if src else ""
        width = "2px" if call is not None and not call.success else "1px"
        return (
            f'<div style="border:{width} solid {colour};border-radius:4px;margin:6px 0;padding:4px 6px">{label}{who}'
            f'<pre style="{_PRE};background:#f8f8f8">{_highlight(code)}</pre></div>'
        )
    if kind == "output":
        call = it[1]
        colour = OK if call.success else FAIL
        bg = "#f1f8f3" if call.success else "#fce8e6"
        label = _label("output" if call.success else "output · error", colour)
        return (
            f'<div style="border-left:4px solid {colour};margin:6px 0;padding:2px 6px">{label}'
            f'<pre style="{_PRE};background:{bg}">{_esc(call.observation)}</pre></div>'
        )
    if kind == "retry":
        c = it[1]
        i = c.dropped_text.rfind("```")
        i = c.dropped_text.rfind("```", 0, i) if i > 0 else i  # the opening fence of the failed block
        reasoning = c.dropped_text[:i] if i >= 0 else c.dropped_text
        return (
            f'<div style="border:2px dashed {RETRY};border-radius:4px;margin:6px 0;padding:4px 6px;background:#fff7ef">'
            f"{_label('retried by self-correction (dropped, not in the ids)', RETRY)}"
            + (f'<pre style="{_PRE};color:#80868b">{_esc(reasoning)}</pre>' if reasoning.strip() else "")
            + f'<pre style="{_PRE};background:#f8f8f8;border:2px solid {FAIL}">{_highlight(c.code)}</pre>'
            f'{_label("failed", FAIL)}<pre style="{_PRE};background:#fce8e6">{_esc(c.observation)}</pre></div>'
        )
    return f'<div style="border-top:2px solid {TRAINED_COLOUR};color:#137333;font-size:12px;margin:6px 0">▼ {_esc(it[1])}</div>'


def _step_summary(n: int, step: list[tuple]) -> str:
    kinds = [it[0] for it in step]
    parts = ["reasoning"] if "text" in kinds else []
    for it in step:
        if it[0] == "code":
            call = it[2]
            parts.append("code (not executed)" if call is None else "code ok" if call.success else "code FAILED")
    if n_retry := kinds.count("retry"):
        parts.append(f"{n_retry} retried")
    return f"Step {n} · " + ", ".join(parts or ["marker"])


def _header(rec: Trajectory, title: str | None) -> str:
    badge = {None: _label("ungraded", "#9aa0a6"), True: _label("correct", OK), False: _label("incorrect", FAIL)}
    badge, md = badge[rec.correct], rec.metadata
    rows = [
        ("gold answer", rec.gold_answer),
        ("final answer", rec.final_answer),
        ("finish reason", rec.finish_reason or "—"),
        ("tool calls", f"{rec.n_calls} ({rec.n_calls - rec.n_failed_calls} ok, {rec.n_failed_calls} failed)"),
    ]
    if rec.corrections:
        rows.append(("self-corrections", f"{len(rec.corrections)} retried"))
    for key in (k for k in _RL_KEYS if k in md):
        v = md[key]
        rows.append((key, f"{v:+.3f}" if key == "advantage" and isinstance(v, int | float) else v))
    if rec.completion_ids:
        rows.append(("tokens", f"{len(rec.completion_ids)} completion, {sum(trained_tokens(rec))} train"))
    cells = "".join(
        f'<tr><td style="color:#5f6368;padding:1px 12px 1px 0">{_esc(k)}</td><td style="{_MONO}">{_esc("—" if v is None else v)}</td></tr>'
        for k, v in rows
    )
    head = f'<div style="font-size:16px;font-weight:700">{_esc(title or rec.question_id)} {badge}</div>'
    question = (
        f'<div style="white-space:pre-wrap;margin:6px 0;padding:6px;background:#f1f3f4">{_esc(rec.question)}</div>'
    )
    sources = [(SOURCE_COLOURS[s], n) for s, n in TOKEN_SOURCES.items()]
    legend = _legend("text written by: ", sources) if rec.token_sources else ""
    return f'{head}{question}<table style="border-collapse:collapse;margin:4px 0">{cells}</table>{legend}'


def trained_tokens(rec: Trajectory) -> list[bool]:
    """Whether each completion token's loss counts: sampled (mask 1), not in the given prefix, and (RL samples) the
    record a row of the update."""
    start, dropped = _loss_start(rec), bool(rec.metadata.get("rl_dropped"))
    return [m == 1 and i >= start and not dropped for i, m in enumerate(rec.mask)]


def _mask_colour(rec: Trajectory, i: int, train: bool) -> str:
    if train:
        return TRAINED_COLOUR
    if i < _loss_start(rec):
        return PREFIX_COLOUR
    return INSERTED_COLOUR if rec.mask[i] == 0 else DROPPED_COLOUR


def _mask_legend(rec: Trajectory) -> str:
    entries = [
        (TRAINED_COLOUR, "trains (mask 1, after loss_start)"),
        (PREFIX_COLOUR, "given prefix (never trains)"),
        (INSERTED_COLOUR, "inserted tool output (mask 0)"),
    ]
    if reason := rec.metadata.get("rl_dropped"):
        entries.append((DROPPED_COLOUR, f"sampled, not trained: the record left the update ({reason})"))
    return _legend("", entries)


def _blend(colour: str, t: float) -> str:
    """White (t = 0) to ``colour`` (t = 1), as #rrggbb."""
    t = min(max(t, 0.0), 1.0)
    rgb = [int(colour[k : k + 2], 16) for k in (1, 3, 5)]
    return "#" + "".join(f"{round(255 + (c - 255) * t):02x}" for c in rgb)


def _token_spans(rec: Trajectory, tokenizer, colours: list[str], titles: list[str], flags: list[bool]) -> str:
    """One span per completion token; a flagged token (class ``thor-flag``) has a red outline."""
    spans = []
    for tid, colour, title, flag in zip(rec.completion_ids, colours, titles, flags):
        piece = _esc(tokenizer.decode([tid], skip_special_tokens=False))
        style = f"background:{colour};border-right:1px solid #fff" + (";color:#fff" if colour == FLAG else "")
        attrs = (
            f' class="thor-flag" style="{style};outline:2px solid {FLAG};outline-offset:-2px"'
            if flag
            else f' style="{style}"'
        )
        spans.append(f'<span{attrs} title="{_esc(title)}">{piece}</span>')
    return f'<div style="white-space:pre-wrap;word-break:break-all;line-height:1.7;{_MONO}">{"".join(spans)}</div>'


def token_view_html(rec: Trajectory, tokenizer) -> str:
    """Every completion token as an inline span, tinted by whether its loss counts."""
    trained = trained_tokens(rec)
    colours = [_mask_colour(rec, i, t) for i, t in enumerate(trained)]
    src = [f" · {TOKEN_SOURCES[s]}" for s in rec.token_sources] if rec.token_sources else [""] * len(trained)
    titles = [
        f"tok {i} · id {tid} · mask {m}{s}" for i, (tid, m, s) in enumerate(zip(rec.completion_ids, rec.mask, src))
    ]
    return (
        f'<details open><summary style="{_SUMMARY}">Token view · {len(trained)} tokens, {sum(trained)} train</summary>'
        f"{_mask_legend(rec)}{_token_spans(rec, tokenizer, colours, titles, [False] * len(trained))}</details>"
    )


def mismatch(rec: Trajectory) -> list[float | None]:
    """Per completion token: engine - trainer log-prob (None where either is missing)."""
    if rec.logprobs is None or rec.trainer_logprobs is None:
        return [None] * len(rec.completion_ids)
    return [None if e is None or t != t else e - t for e, t in zip(rec.logprobs, rec.trainer_logprobs)]


def audit_html(rec: Trajectory, tokenizer, threshold: float = MISMATCH_THRESHOLD) -> str:
    """The per-token audit (see the module docstring): four colourings of the same tokens, one open at a time."""
    n, trained, diff = len(rec.completion_ids), trained_tokens(rec), mismatch(rec)
    ent = rec.entropy or [float("nan")] * n
    adv = float(rec.metadata.get("advantage", 0.0) or 0.0)
    flags = [d is not None and abs(d) > threshold for d in diff]
    n_flag, n_flag_trained = sum(flags), sum(f and t for f, t in zip(flags, trained))
    top = max([e for e in ent if e == e] or [1.0]) or 1.0
    num = lambda v: "—" if v is None or v != v else f"{v:+.3f}"  # noqa: E731
    titles = [
        f"tok {i} · id {tid} · mask {rec.mask[i]} · {'trains' if trained[i] else 'no loss'} · advantage {adv:+.3f} · "
        f"engine {num(rec.logprobs[i] if rec.logprobs else None)} · trainer "
        f"{num(rec.trainer_logprobs[i] if rec.trainer_logprobs else None)} · diff {num(diff[i])} · entropy {num(ent[i])}"
        + (f" · PAST {threshold:g} nats" if flags[i] else "")
        for i, tid in enumerate(rec.completion_ids)
    ]
    mask = [_mask_colour(rec, i, t) for i, t in enumerate(trained)]
    views = {
        "mask": (mask, _mask_legend(rec)),
        "advantage": (
            [
                _blend(POSITIVE if adv > 0 else NEGATIVE, 0.2 + 0.8 * min(abs(adv) / 2, 1)) if t else m
                for t, m in zip(trained, mask)
            ],
            _legend(
                "advantage of the row, on its trained tokens (|A| 2 = full): ",
                [(_blend(POSITIVE, 1), "positive"), (_blend(NEGATIVE, 1), "negative"), (INSERTED_COLOUR, "no loss")],
            ),
        ),
        "mismatch": (
            [
                INSERTED_COLOUR if d is None else FLAG if f else _blend(MISMATCH, abs(d) / threshold)
                for d, f in zip(diff, flags)
            ],
            _legend(
                f"|engine - trainer| log-prob, 0 to {threshold:g} nats: ",
                [
                    (_blend(MISMATCH, 0.5), f"{threshold / 2:g}"),
                    (_blend(MISMATCH, 1), f"{threshold:g}"),
                    (FLAG, "past it (flagged)"),
                    (INSERTED_COLOUR, "no engine or trainer log-prob"),
                ],
            ),
        ),
        "entropy": (
            [INSERTED_COLOUR if e != e else _blend(ENTROPY, e / top) for e in ent],
            _legend(
                f"entropy of the trainer's distribution, 0 to {top:.2f} nats: ",
                [(_blend(ENTROPY, 0.5), f"{top / 2:.2f}"), (_blend(ENTROPY, 1), f"{top:.2f}")],
            ),
        ),
    }
    group = f"thor-audit-{id(rec)}"
    count = f"{n_flag} tokens past {threshold:g} nats ({n_flag_trained} trained)"
    blocks = [
        f'<details class="thor-audit" data-view="{name}" name="{group}"{" open" if name == "mask" else ""}>'
        f'<summary style="{_SUMMARY}">Audit · colour by {name} · {n} tokens, {sum(trained)} train, {count}</summary>'
        f"{legend}{_token_spans(rec, tokenizer, colours, titles, flags)}</details>"
        for name, (colours, legend) in views.items()
    ]
    return f'<div class="thor-audit-views" style="margin:6px 0">{"".join(blocks)}</div>'


def trajectory_html(
    record: Trajectory,
    tokenizer=None,
    *,
    title: str | None = None,
    children: Iterable[Trajectory] = (),
    token_view: bool | None = None,
    mismatch_threshold: float = MISMATCH_THRESHOLD,
) -> str:
    """One record as an HTML fragment (see the module docstring); ``children``: its step-level regenerations.

    ``token_view``: True shows the token view (the per-token audit where the record has one), None (default) the
    audit only where the record has one, False neither; ``mismatch_threshold``: the audit's flag, in nats.
    """
    items = _items_from_tokens(record, tokenizer) if tokenizer is not None else _items_from_text(record)
    start, body, seen_mark = _loss_start(record), [], False
    for n, step in enumerate(_steps(items), 1):
        seen_mark = seen_mark or any(it[0] == "mark" for it in step)
        in_prefix = start > 0 and not seen_mark and tokenizer is not None
        summary = _step_summary(n, step) + (" (given prefix)" if in_prefix else "")
        failed = any(it[0] == "code" and it[2] is not None and not it[2].success for it in step)
        border = FAIL if failed else RETRY if any(it[0] == "retry" for it in step) else "#dadce0"
        body.append(
            f'<details class="thor-step"{"" if in_prefix else " open"} style="border-left:3px solid {border};'
            f'margin:6px 0;padding:2px 8px"><summary style="{_SUMMARY}">{_esc(summary)}</summary>'
            + "".join(_render_item(it) for it in step)
            + "</details>"
        )
    audited = record.trainer_logprobs is not None
    if tokenizer is not None and (token_view or (token_view is None and audited)):
        body.append(
            audit_html(record, tokenizer, mismatch_threshold) if audited else token_view_html(record, tokenizer)
        )
    kids = list(children)
    if kids:
        inner = "".join(
            trajectory_html(
                c,
                tokenizer,
                title=f"regeneration {i} of {record.question_id}",
                token_view=token_view,
                mismatch_threshold=mismatch_threshold,
            )  # fmt: skip
            for i, c in enumerate(kids, 1)
        )
        body.append(
            f'<details open><summary style="{_SUMMARY}">Step-level regenerations ({len(kids)})</summary>'
            f'<div style="margin-left:16px">{inner}</div></details>'
        )
    extra = {k: v for k, v in record.metadata.items() if k not in _RL_KEYS}
    if extra:
        body.append(
            f'<details><summary style="{_SUMMARY};color:#5f6368">metadata</summary>'
            f'<pre style="{_PRE};background:#f8f8f8">{_esc(json.dumps(extra, indent=1, default=str))}</pre></details>'
        )
    return (
        f'<div style="{_FONT};border:1px solid #dadce0;border-radius:6px;padding:10px;margin:10px 0;background:#fff">'
        f"{_header(record, title)}{''.join(body)}</div>"
    )


def _pairs(records, children) -> list[tuple[Trajectory, list[Trajectory]]]:
    """Records, or (record, its children) pairs, as pairs; ``children`` belongs to a single record."""
    records = [records] if isinstance(records, Trajectory) else list(records)
    pairs = [(r[0], list(r[1])) if isinstance(r, tuple) else (r, []) for r in records]
    if children:
        if len(pairs) != 1:
            raise ValueError("children= is for one record; pass (record, children) pairs for several")
        pairs = [(pairs[0][0], pairs[0][1] + list(children))]
    return pairs


def records_html(records, tokenizer=None, title: str | None = None, *, children=(), **kw) -> str:
    """Several records as one fragment: ``records`` holds records or (record, children) pairs (or is one record).

    ``children``: the step-level regenerations of a single record; ``kw`` goes to ``trajectory_html``.
    """
    pairs = _pairs(records, children)
    records = [r for r, _ in pairs]
    graded = [r for r in records if r.correct is not None]
    line = f"{len(records)} records" + (f", {sum(r.correct for r in graded)}/{len(graded)} correct" if graded else "")
    head = (
        f'<div style="{_FONT}"><div style="font-size:20px;font-weight:700">{_esc(title)}</div>{line}</div>'
        if title
        else ""
    )
    return head + "".join(
        trajectory_html(r, tokenizer, title=f"{i}. {r.question_id}", children=kids, **kw)
        for i, (r, kids) in enumerate(pairs, 1)
    )


def write_html(records, path: str | os.PathLike, tokenizer=None, title: str = "THOR trajectories", **kw) -> Path:
    """A standalone HTML file (UTF-8) of ``records`` (as in ``records_html``); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title></head>\n'
        f'<body style="margin:16px;background:#fafafa">{records_html(records, tokenizer, title=title, **kw)}</body></html>\n'
    )
    path.write_text(doc, encoding="utf-8")
    return path


def show(records, tokenizer=None, **kw):
    """The records (as in ``records_html``) as ``IPython.display.HTML`` for a notebook cell."""
    from IPython.display import HTML

    return HTML(records_html(records, tokenizer, **kw))
