"""The per-token audit of RL samples: what the trainer stores with each saved rollout and how the viewer shows it.

``fixtures/rl_samples_tiny.jsonl`` is the ``samples/step-1.jsonl`` of a real one-step run (``rl_scripted.run``: the
tiny random Qwen trained by the real trainer, the scripted token stream through the real engine and sandbox,
2 questions x G = 4 with their step-level continuations; made with ``rl_scripted.run(out, problems, steps=1)``).
The run itself takes 40-90 s on the 2-core machine, too long for each CI run, so its output is kept; the smoke
chain's test below checks the same fields on a fresh run of the real model (vLLM log-probs).
The scripted engine reports one fixed log-prob (-0.25) for every token, so the browser test gives one record the
log-probs an exact engine would report (the trainer's own) and shifts one trained token by a known 1 nat.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time
from pathlib import Path

import pytest
from test_viewer import _chromium

from thor_core import viewer
from thor_core.record import MISMATCH_THRESHOLD, Trajectory, pack_floats, read_jsonl, unpack_floats

FIXTURE = Path(__file__).parent / "fixtures" / "rl_samples_tiny.jsonl"


@pytest.fixture(scope="module")
def samples():
    return read_jsonl(FIXTURE)


def check_audit(records: list[Trajectory]) -> int:
    """The audit fields of one saved step, checked against the records themselves; returns the trained rows."""
    trained = 0
    for r in records:
        md = r.metadata
        if md.get("rl_dropped"):  # not a row of the update: no trainer pass, no advantage
            assert r.trainer_logprobs is None and r.entropy is None and "advantage" not in md
            continue
        trained += 1
        n = len(r.completion_ids)
        assert len(r.trainer_logprobs) == len(r.entropy) == n
        assert all(math.isfinite(x) and x <= 0 for x in r.trainer_logprobs)
        assert all(math.isfinite(x) and x >= -1e-3 for x in r.entropy)  # (float16)
        assert math.isfinite(md["advantage"]) and md["advantage"] != 0
        marks = viewer.trained_tokens(r)
        start = md.get("loss_start", 0)
        assert marks == [m == 1 and i >= start for i, m in enumerate(r.mask)] and any(marks)
        diff = viewer.mismatch(r)
        for i, d in enumerate(diff):
            e, t = r.logprobs[i] if r.logprobs else None, r.trainer_logprobs[i]
            assert (d is None) == (e is None) and (d is None or d == e - t)
    return trained


def test_floats_pack_compactly_and_round_trip(samples):
    values = [-0.0012345, -19.87654321, float("nan"), 0.0]
    back = unpack_floats(pack_floats(values, "f"), "f")
    assert back[0] == pytest.approx(-0.0012345, rel=1e-6) and back[1] == pytest.approx(-19.87654321, rel=1e-6)
    assert math.isnan(back[2]) and back[3] == 0.0
    assert len(pack_floats([0.0] * 300, "f")) + len(pack_floats([0.0] * 300, "e")) == 8 * 300  # 8 characters a token
    r = next(r for r in samples if r.trainer_logprobs)
    line = json.dumps(r.to_dict())
    assert isinstance(json.loads(line)["trainer_logprobs"], str)
    again = Trajectory.from_dict(json.loads(line))
    assert again.trainer_logprobs == r.trainer_logprobs and again.entropy == r.entropy
    with pytest.raises(ValueError, match="trainer_logprobs has 1 entries"):
        Trajectory(**{**r.to_dict(), "trainer_logprobs": [0.0]})


def test_a_real_runs_samples_carry_the_audit(samples):
    assert check_audit(samples) == 14  # 6 episode rows + 8 step-level rows; the 2 failed-code rollouts left out
    dropped = [r for r in samples if r.metadata.get("rl_dropped")]
    assert [r.metadata["rl_dropped"] for r in dropped] == ["failed_code"] * 2
    assert not any(any(viewer.trained_tokens(r)) for r in dropped)
    steps = [r for r in samples if r.metadata["rl_level"] == "step"]
    assert steps and all(r.metadata["loss_start"] > 0 for r in steps)


@pytest.mark.model
@pytest.mark.notebook
def test_the_smoke_chains_rl_samples_carry_a_consistent_audit(smoke_chain):
    """Notebook 03 of the smoke chain (the real model, vLLM's sampled log-probs): every saved step's audit."""
    smoke_chain.check()
    records = [r for path in (smoke_chain.root / "03_rl" / "samples").glob("step-*.jsonl") for r in read_jsonl(path)]
    assert check_audit(records) > 0
    diffs = [abs(d) for r in records for d in viewer.mismatch(r) if d is not None]
    assert diffs and sum(diffs) / len(diffs) < 0.1  # the same weights: a shifted alignment would be nats off


# ---------------------------------------------------------------- the page in a browser


class _Page:
    """A page in headless Chromium, driven over the DevTools protocol (the websocket-client package)."""

    def __init__(self, exe: str, url: str, tmp: Path):
        import websocket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
        self.proc = subprocess.Popen(
            [exe, *flags, f"--remote-debugging-port={port}", f"--user-data-dir={tmp / 'profile'}",
             "--window-size=1200,900", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline, target = time.monotonic() + 60, None
        while target is None:
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as f:
                    target = next(t for t in json.load(f) if t["type"] == "page")
            except (OSError, StopIteration):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.n = 0
        while self.eval("document.readyState + ' ' + location.href") != f"complete {url}":
            assert time.monotonic() < deadline, "the page did not load"
            time.sleep(0.1)

    def send(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.n:
                assert "error" not in reply, reply
                return reply["result"]

    def eval(self, js: str):
        result = self.send("Runtime.evaluate", expression=js, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) in the middle of the element."""
        box = self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _rgb(hex_colour: str) -> str:
    return "rgb({}, {}, {})".format(*(int(hex_colour[k : k + 2], 16) for k in (1, 3, 5)))


@pytest.mark.browser
def test_the_audit_in_headless_chromium(samples, qwen_tokenizer, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary (apt-get install chromium; .ci/run installs it)")
    records = [Trajectory.from_dict(r.to_dict()) for r in samples]
    episode = next(r for r in records if r.trainer_logprobs and r.tool_calls and r.metadata["rl_level"] == "episode")
    trained = viewer.trained_tokens(episode)
    k = max(i for i, t in enumerate(trained) if t)  # the injected mismatch: the last trained token
    episode.logprobs = [t + (1.0 if i == k else 0.0) if m else None
                        for i, (t, m) in enumerate(zip(episode.trainer_logprobs, episode.mask))]  # fmt: skip
    children = [r for r in records if r.metadata["rl_level"] == "step"][:2]
    path = viewer.write_html([(episode, children)], tmp_path / "audit.html", qwen_tokenizer, title="audit")
    out_start, out_end = episode.tool_calls[0].output_span
    assert out_end > out_start
    page = _Page(exe, path.as_uri(), tmp_path)
    try:
        views = "document.querySelectorAll('details.thor-audit')"
        # the first record's four colourings, the mask one open; then each child's
        assert page.eval(f"Array.from({views}).slice(0, 4).map(d => d.dataset.view + ':' + d.open)") == [
            "mask:true", "advantage:false", "mismatch:false", "entropy:false"
        ]  # fmt: skip
        assert page.eval(f"{views}.length") == 4 * 3

        def colours(view: str) -> list[str]:
            js = (f"Array.from(document.querySelector('details.thor-audit[data-view={view}]')"
                  ".querySelectorAll('span[title]')).map(s => getComputedStyle(s).backgroundColor)")  # fmt: skip
            return page.eval(js)

        mask = colours("mask")
        assert len(mask) == len(episode.completion_ids)
        assert set(mask[out_start:out_end]) == {_rgb(viewer.INSERTED_COLOUR)}  # the tool output: not trained
        assert [c == _rgb(viewer.TRAINED_COLOUR) for c in mask] == trained
        closed = "document.querySelector('details.thor-audit[data-view=mismatch] span[title]').checkVisibility()"
        assert page.eval(closed) is False  # a closed colouring is not shown

        page.click("details.thor-audit[data-view=mismatch] > summary")
        assert page.eval(f"Array.from({views}).slice(0, 4).map(d => d.open)") == [False, False, True, False]
        flagged = page.eval(
            "Array.from(document.querySelector('details.thor-audit[data-view=mismatch]').querySelectorAll('span[title]'))"
            ".flatMap((s, i) => s.classList.contains('thor-flag') ? [i] : [])"
        )
        assert flagged == [k]
        shown = colours("mismatch")
        assert shown[k] == _rgb(viewer.FLAG) and shown[0] == _rgb("#ffffff")  # no mismatch: white
        assert shown[out_start] == _rgb(viewer.INSERTED_COLOUR)  # no engine log-prob for an inserted token
        summary = page.eval("document.querySelector('details.thor-audit[data-view=mismatch] > summary').textContent")
        assert f"1 tokens past {MISMATCH_THRESHOLD:g} nats (1 trained)" in summary
        assert "PAST" in page.eval(
            f"document.querySelector('details.thor-audit[data-view=mismatch]').querySelectorAll('span[title]')[{k}].title"
        )

        page.click("details.thor-audit[data-view=entropy] > summary")
        assert page.eval(f"Array.from({views}).slice(0, 4).map(d => d.open)") == [False, False, False, True]
        entropy = colours("entropy")
        assert len(set(entropy)) > 3 and entropy != shown

        page.click("details.thor-audit[data-view=advantage] > summary")
        advantage = colours("advantage")
        sign = viewer.POSITIVE if episode.metadata["advantage"] > 0 else viewer.NEGATIVE
        tinted = [c != _rgb(viewer.INSERTED_COLOUR) and c != _rgb(viewer.PREFIX_COLOUR) for c in advantage]
        assert tinted == trained and len({advantage[i] for i, t in enumerate(trained) if t}) == 1
        assert sign in (viewer.POSITIVE, viewer.NEGATIVE)
    finally:
        page.close()
