"""The trajectory viewer: records built by hand from real token ids, rendered and checked.

The browser test opens the written file in headless Chromium (Debian's
``chromium``; ``.ci/run`` installs it when missing) and checks the screenshot
and the DOM as a person would see them.
"""

import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from thor_core import tir, viewer
from thor_core.record import Correction, ToolCall, Trajectory

EVIL = "<script>alert(1)</script> and </details>"
FAILED_CODE = f"print('{EVIL}')\nx = 1 / 0"


def _build(tok, pieces, **kw):
    """A record from (kind, text, source) pieces; kinds: text, code (with a result), output."""
    ids, mask, sources, spans = [], [], "", []
    for kind, text, src in pieces:
        piece = tok(text, add_special_tokens=False).input_ids
        spans.append((len(ids), len(ids) + len(piece)))
        ids += piece
        mask += [0 if kind == "output" else 1] * len(piece)
        sources += src * len(piece)
    calls = []
    for i, (kind, text, _) in enumerate(pieces):
        if kind == "code":
            code = text.split("```python\n", 1)[1].rsplit("\n```", 1)[0]
            ok = "1 / 0" not in code
            observation = pieces[i + 1][1].split("```output\n")[1].rsplit("\n```", 1)[0]
            calls.append(ToolCall(code, ok, observation, spans[i], spans[i + 1]))
    return Trajectory(
        question_id=kw.pop("question_id", "q1"),
        question=kw.pop("question", f"What is 6*7? {EVIL}"),
        gold_answer="42",
        prompt_ids=[1, 2, 3],
        completion_ids=ids,
        mask=mask,
        tool_calls=calls,
        completion_text="".join(p[1] for p in pieces),
        final_answer=tir.last_boxed("".join(p[1] for p in pieces)),
        correct=True,
        finish_reason="answer",
        **kw,
    ), spans


PIECES = [
    ("text", f"Let me compute. {EVIL}\n", "a"),
    ("code", f"```python\n{FAILED_CODE}\n```", "a"),
    ("output", "\n```output\nZeroDivisionError: division by zero\n```\n", "t"),
    ("text", "The division failed; print the product instead.\n", "c"),
    ("code", "```python\nprint(6 * 7)\n```", "c"),
    ("output", "\n```output\n42\n```\n", "t"),
    ("text", "So the answer is \\boxed{42}.", "a"),
]


@pytest.fixture(scope="module")
def record(qwen_tokenizer):
    rec, spans = _build(qwen_tokenizer, PIECES)
    rec.corrections = [
        Correction(
            at_token=spans[4][0],
            dropped_text=f"Try again:\n```python\nprint(undefined_name)  # {EVIL}\n```",
            code=f"print(undefined_name)  # {EVIL}",
            observation="NameError: name 'undefined_name' is not defined",
        )
    ]
    rec.token_sources = "".join(s * (b - a) for (_, _, s), (a, b) in zip(PIECES, spans))
    rec.metadata = {"reward": 1.0, "advantage": 0.5, "rl_level": "episode", "group": "q1", "seed": 3}
    rec.validate()
    return rec


@pytest.fixture(scope="module")
def children(qwen_tokenizer):
    cut = len(qwen_tokenizer("".join(p[1] for p in PIECES[:3]), add_special_tokens=False).input_ids)
    kids = []
    for i, tail in enumerate(["Multiply directly: \\boxed{42}.", "Guess \\boxed{41}."]):
        rec, _ = _build(qwen_tokenizer, PIECES[:3] + [("text", tail, "a")], question_id=f"q1/step{i}")
        rec.correct = i == 0
        rec.metadata = {
            "reward": float(i == 0),
            "advantage": 0.7 if i == 0 else -0.7,
            "rl_level": "step",
            "loss_start": cut,
        }
        kids.append(rec)
    return kids


class _Tags(HTMLParser):
    """Checks nesting and collects (tag, attrs) of every start tag."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self):
        super().__init__()
        self.stack, self.starts = [], []

    def handle_starttag(self, tag, attrs):
        self.starts.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def _parse(text):
    p = _Tags()
    p.feed(text)
    p.close()
    assert p.stack == [], f"unclosed tags {p.stack}"
    return p.starts


def _steps(starts):
    return [a for t, a in starts if t == "details" and a.get("class") == "thor-step"]


def test_model_text_is_escaped_and_no_style_or_script(record, qwen_tokenizer):
    for tok in (qwen_tokenizer, None):
        out = viewer.trajectory_html(record, tok, token_view=True)
        assert "<script" not in out.lower() and "<style" not in out.lower()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
        assert "&lt;/details&gt;" in out
        starts = _parse(out)  # the completion's </details> would break the nesting
        assert all(tag not in ("script", "style") for tag, _ in starts)


def test_each_step_is_a_details_in_order(record, qwen_tokenizer):
    out = viewer.trajectory_html(record, qwen_tokenizer)
    steps = _steps(_parse(out))
    assert len(steps) == 3 and all("open" in s for s in steps)
    summaries = re.findall(r'class="thor-step".*?<summary[^>]*>(.*?)</summary>', out)
    assert summaries == [
        "Step 1 · reasoning, code FAILED",
        "Step 2 · reasoning, code ok, 1 retried",
        "Step 3 · reasoning",
    ]
    # reasoning, code and output appear in completion order
    order = [
        out.index(s)
        for s in ("Let me compute.", "ZeroDivisionError", "print the product", "Try again", "So the answer")
    ]
    assert order == sorted(order)


def test_failed_call_and_retry_are_marked(record, qwen_tokenizer):
    for tok in (qwen_tokenizer, None):
        out = viewer.trajectory_html(record, tok)
        assert out.count("code · call failed") == 1
        assert f"border:2px solid {viewer.FAIL}" in out
        assert out.count("retried by self-correction") == 1
        assert "NameError: name &#x27;undefined_name&#x27; is not defined" in out
        retry = out.index("retried by self-correction")  # where it was cut: just before the kept call
        assert out.index("print the product") < retry < out.index("code · ok") < out.index("So the answer")


def test_header_shows_grades_and_rl_fields(record, qwen_tokenizer):
    out = viewer.trajectory_html(record, qwen_tokenizer)
    for text in ("correct", "answer", "2 (1 ok, 1 failed)", "1 retried", "reward", "+0.500", "episode"):
        assert text in out
    assert "What is 6*7? &lt;script&gt;" in out


def test_token_sources_are_tinted_with_a_legend(record, qwen_tokenizer):
    out = viewer.trajectory_html(record, qwen_tokenizer)
    assert "text written by:" in out
    critic = f'<span style="background:{viewer.SOURCE_COLOURS["c"]}" title="critic">'
    assert critic + "The division failed; print the product instead.\n</span>" in out
    assert "written by critic" in out  # the second code block


def test_token_view_tints_exactly_the_trained_tokens(children, qwen_tokenizer):
    child = children[0]
    out = viewer.trajectory_html(child, qwen_tokenizer, token_view=True)
    tokens = re.findall(r'<span style="background:(#[0-9a-f]+);[^"]*" title="tok (\d+) · id (\d+)', out)
    assert [int(t[1]) for t in tokens] == list(range(len(child.completion_ids)))
    assert [int(t[2]) for t in tokens] == child.completion_ids
    start = child.metadata["loss_start"]
    trained = [i for i, m in enumerate(child.mask) if m == 1 and i >= start]
    assert [int(i) for c, i, _ in tokens if c == viewer.TRAINED_COLOUR] == trained
    assert 0 < len(trained) < sum(child.mask)  # the prefix holds sampled tokens that do not train
    assert sum(c == viewer.PREFIX_COLOUR for c, _, _ in tokens) == start
    assert f"{len(trained)} train" in out


def test_children_rendered_with_their_prefix_collapsed(record, children, qwen_tokenizer):
    out = viewer.trajectory_html(record, qwen_tokenizer, children=children)
    assert "Step-level regenerations (2)" in out
    assert "regeneration 1 of q1" in out and "regeneration 2 of q1" in out
    assert "Multiply directly" in out and "Guess" in out
    assert out.count("training starts here") == 2
    steps = _steps(_parse(out))
    assert len(steps) == 3 + 2 * 2
    assert sum("open" not in s for s in steps) == 2  # each child's given prefix step starts closed


def test_records_html_write_html_and_show(record, children, qwen_tokenizer, tmp_path):
    frag = viewer.records_html([record, *children], qwen_tokenizer, title="run <1>")
    assert "run &lt;1&gt;" in frag and "3 records, 2/3 correct" in frag
    path = viewer.write_html([record], tmp_path / "v" / "view.html", qwen_tokenizer, token_view=True)
    doc = path.read_text(encoding="utf-8")
    assert doc.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in doc
    _parse(doc)
    shown = viewer.show(record, qwen_tokenizer, children=children)
    assert shown.data == viewer.records_html([(record, children)], qwen_tokenizer)
    assert "Step-level regenerations (2)" in shown.data
    with pytest.raises(ValueError, match="children= is for one record"):
        viewer.records_html([record, record], children=children)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.browser
def test_viewer_in_headless_chromium(record, children, qwen_tokenizer, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary (apt-get install chromium; .ci/run installs it)")
    from PIL import Image

    path = viewer.write_html([record], tmp_path / "view.html", qwen_tokenizer, children=children, token_view=True)
    png = tmp_path / "view.png"
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    flags += [f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    subprocess.run(
        [*flags, f"--screenshot={png}", "--window-size=1000,1400", path.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    img = Image.open(png).convert("RGB")
    assert img.size == (1000, 1400)
    colours = img.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50, "the screenshot is (almost) blank"
    assert max(n for n, _ in colours) < 0.95 * img.size[0] * img.size[1]
    dom = subprocess.run(
        [*flags, "--dump-dom", path.as_uri()], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    steps = _steps(_parse(dom))
    assert len(steps) == 3 + 2 * 2, "each step should be a <details> section in the DOM"
    assert "code · call failed" in dom and "<script" not in dom


def test_the_audit_colours_the_same_tokens_four_ways_and_flags_mismatches(record, children, qwen_tokenizer):
    child = Trajectory.from_dict(children[0].to_dict())
    n = len(child.completion_ids)
    assert child.metadata["loss_start"] > 0 and child.mask[0] == 1
    assert "thor-audit" not in viewer.trajectory_html(child, qwen_tokenizer)  # no audit fields: no audit view
    child.trainer_logprobs = [-1.0] * n
    child.entropy = [0.1 * i for i in range(n)]
    child.logprobs = [None if m == 0 else -1.0 for m in child.mask]
    child.logprobs[0], child.logprobs[n - 1] = -1.6, -1.2  # 0.6 nats (in the given prefix) and 0.2 (trained)
    out = viewer.trajectory_html(child, qwen_tokenizer, mismatch_threshold=0.5)
    starts = _parse(out)
    views = [a for t, a in starts if t == "details" and a.get("class") == "thor-audit"]
    assert [v["data-view"] for v in views] == list(viewer.AUDIT_VIEWS) and len({v["name"] for v in views}) == 1
    assert ["open" in v for v in views] == [True, False, False, False]
    assert out.count("1 tokens past 0.5 nats (0 trained)") == 4  # the 0.6 token lies in the given prefix
    assert sum(a.get("class") == "thor-flag" for t, a in starts if t == "span") == 4  # flagged in every colouring
    mismatch = out.split('data-view="mismatch"')[1].split("</details>")[0]
    assert mismatch.count(f"background:{viewer.FLAG};border-right") == 1 and "diff -0.600 · entropy" in mismatch
    assert f"background:{viewer._blend(viewer.MISMATCH, 0.2 / 0.5)}" in mismatch  # noqa: SLF001
    assert viewer.audit_html(child, qwen_tokenizer, 0.1).count("2 tokens past 0.1 nats (1 trained)") == 4
    child.metadata["rl_dropped"] = "no_spread"  # not a row of the update: nothing trains
    assert not any(viewer.trained_tokens(child)) and "the record left the update (no_spread)" in viewer.audit_html(
        child, qwen_tokenizer
    )
