"""``sandbox_urls``: the stages' code on sandbox hosts (the kit's own server on loopback), failover when a host dies.

A host "dies" by its HTTP server closing its socket while the sandbox behind it keeps running (as a killed server
process leaves nothing listening): the cells in flight finish, the next calls are refused.
"""

from __future__ import annotations

import json
import socket
from contextlib import ExitStack

import pytest

from thor_core.backends.scripted import ScriptedBackend
from thor_core.engine.rollout import RolloutConfig, RolloutTask, run_rollouts
from thor_core.sandbox import RemoteSandbox, Sandbox, SandboxConfig, SandboxUnavailable, open_sandbox
from thor_core.sandbox.server import SandboxServer

END = "<|im_end|>"
FAST = 0.01  # retry backoff in these tests (production: 0.2 s, doubling), so a dead host is found in milliseconds


@pytest.fixture(scope="module")
def local():
    with Sandbox(SandboxConfig(timeout_s=30.0, preload=(), warmup="", prefault="")) as sb:
        yield sb


@pytest.fixture
def hosts(local):
    servers = [SandboxServer(local).start() for _ in range(2)]
    yield servers
    for server in servers:
        server.close()


def die(server: SandboxServer) -> None:
    """The host stops answering: nothing listens on its port any more."""
    server.httpd.shutdown()
    server.httpd.server_close()


def two_cell_policy(between):
    """Cell 1 sets the state, cell 2 needs it; ``between()`` runs once, after the first cell of any rollout."""
    calls = []

    def respond(context: str) -> str:
        done = context.split("<|im_start|>assistant")[-1].count("```output")
        if done == 0:
            return "```python\nx = 6\nprint(x)\n```\n"
        if done == 1:
            if not calls:
                calls.append(1)
                between()
            return "```python\nprint(x * 7)\n```\n"
        return "So \\boxed{42}." + END

    return respond


def tasks(tokenizer, n: int) -> list[RolloutTask]:
    from thor_core import tir

    prompt = tokenizer.encode(tir.render_prompt(tokenizer, "What is 6*7?"), add_special_tokens=False)
    return [RolloutTask(question_id=f"q{i}", question="6*7", gold_answer="42", prompt_ids=prompt) for i in range(n)]


def test_sessions_of_a_dead_host_fail_over_and_rerun_their_cells(qwen_tokenizer, hosts, tmp_path):
    urls = [s.url for s in hosts]
    with open_sandbox(urls, tmp_path) as sandbox:
        assert isinstance(sandbox, RemoteSandbox)
        sandbox.backoff_s = FAST
        backend = ScriptedBackend(qwen_tokenizer, two_cell_policy(lambda: die(hosts[0])))
        records = run_rollouts(backend, sandbox, tasks(qwen_tokenizer, 6), RolloutConfig(), progress=False)
        assert sandbox.down.keys() == {urls[0]}
        moved = sum(sandbox.moved.values())
        assert moved >= 1 and set(sandbox.moved) == {(urls[0], urls[1])}
    for record in records:  # every rollout got the real result of its second cell, none a failure
        assert [c.observation for c in record.tool_calls] == ["6", "42"], record.tool_calls
        assert all(c.success for c in record.tool_calls) and record.final_answer == "42"
    [entry] = json.loads((tmp_path / "sandbox.json").read_text())["opened"]
    assert entry["hosts"] == urls and entry["down"].keys() == {urls[0]}
    assert entry["sessions_moved"] == [{"from": urls[0], "to": urls[1], "sessions": moved}]


def test_with_every_host_dead_the_run_stops_naming_them(qwen_tokenizer, hosts):
    urls = [s.url for s in hosts]
    with open_sandbox(urls) as sandbox:
        sandbox.backoff_s = FAST
        backend = ScriptedBackend(qwen_tokenizer, two_cell_policy(lambda: [die(s) for s in hosts]))
        with pytest.raises(SandboxUnavailable) as info:
            run_rollouts(backend, sandbox, tasks(qwen_tokenizer, 4), RolloutConfig(), progress=False)
    message = str(info.value)
    assert all(url in message for url in urls) and "python -m thor_core.sandbox.server" in message


def test_an_unreachable_host_stops_the_run_at_the_start(hosts):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(SandboxUnavailable) as info:
        with open_sandbox([hosts[0].url, nobody]):
            pass
    assert nobody in str(info.value) and "python -m thor_core.sandbox.server" in str(info.value)


def test_bad_urls_are_refused_with_the_form_wanted():
    from thor_core.rl.config import RLParams

    with pytest.raises(ValueError, match="'localhost:8080' is not http://HOST:PORT"):
        RLParams(sandbox_urls=["localhost:8080"])
    with pytest.raises(ValueError, match="listed twice"):
        RLParams(sandbox_urls=["http://a:1", "http://a:1/"])


def test_the_clis_pass_repeated_sandbox_urls_to_the_params(tmp_path, capsys):
    """``--sandbox-url`` reaches ``sandbox_urls`` (seen by its check of the second URL, before anything runs)."""
    from thor_core.files import REPO_ROOT
    from thor_core.rl.__main__ import main as rl_main
    from thor_core.runs.notebooks import main as runs_main
    from thor_core.tirgen.steps import main as tirgen_main

    for main in (rl_main, lambda argv: tirgen_main(["--out-dir", str(tmp_path), *argv])):
        with pytest.raises(ValueError, match="'host-b:2' is not http://HOST:PORT"):
            main(["--sandbox-url", "http://host-a:1", "--sandbox-url", "host-b:2"])
    echo = REPO_ROOT / "tests" / "fixtures" / "params_echo.ipynb"  # declares no sandbox_urls: refused by name
    assert runs_main([str(echo), "--sandbox-url", "http://host-a:1", "--out-dir", str(tmp_path / "run")]) == 2
    assert "sandbox_urls: not in the notebook's parameters cell" in capsys.readouterr().err


def test_the_tirgen_stage_takes_its_sandbox_from_the_params(qwen_tokenizer, hosts, tmp_path, monkeypatch):
    """The stage's own path (``steps.stage`` -> ``open_sandbox(p.sandbox_urls, out_dir)``); a scripted backend
    stands in for the model so that no weights load."""
    from thor_core.tirgen import steps
    from thor_core.tirgen.config import TIRGenParams

    scripted = ScriptedBackend(qwen_tokenizer, lambda context: END)
    monkeypatch.setattr(steps, "open_backends", lambda p, stack: (scripted, scripted))
    urls = [s.url for s in hosts]
    p = TIRGenParams(n_problems=2, sandbox_urls=urls)
    with ExitStack() as stack:
        stage = steps.stage(p, tmp_path, stack, progress=False)
        next(stage)  # problems
        _, (_actor, _critic, sandbox) = next(stage)
        assert isinstance(sandbox, RemoteSandbox) and sandbox.urls == urls
        with sandbox.session() as session:
            session.run("y = 5")
            assert session.run("print(y + 1)").observation == "6"
    assert json.loads((tmp_path / "sandbox.json").read_text())["opened"][0]["hosts"] == urls
    die(hosts[1])  # a host down at the start stops the stage before any model loads
    monkeypatch.setattr(steps, "open_backends", lambda p, stack: pytest.fail("a model loaded"))
    with ExitStack() as stack, pytest.raises(SandboxUnavailable, match=urls[1]):
        stage = steps.stage(p, tmp_path, stack, progress=False)
        next(stage)
        next(stage)


def test_a_host_process_killed_mid_cell_hands_the_cell_to_another(hosts):
    """The real thing: a server process SIGKILLed while a cell runs there (the connection resets, no answer)."""
    import subprocess
    import sys
    import threading
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "thor_core.sandbox.server", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "sandbox server on" in process.stdout.readline()  # printed once it serves
        doomed = f"http://127.0.0.1:{port}"
        with open_sandbox([doomed, hosts[0].url]) as sandbox:
            sandbox.backoff_s = FAST
            session = sandbox.session()
            assert session.url == doomed
            session.run("x = 6")
            threading.Timer(0.5, process.kill).start()
            t0 = time.monotonic()
            result = session.run("import time\ntime.sleep(2)\nprint(x * 7)")
            assert result.observation == "42" and time.monotonic() - t0 > 2  # re-run in full on the live host
            assert session.url == hosts[0].url and sandbox.moved == {(doomed, hosts[0].url): 1}
            assert doomed in sandbox.down
            session.close()
    finally:
        process.kill()
        process.wait()
