"""The HTTP front (SandboxFusion's /run_code plus sessions) and RemoteSandbox, on 127.0.0.1."""

import json
import socket
import urllib.error
import urllib.request

import pytest

from thor_core import tir
from thor_core.sandbox import RemoteSandbox, Sandbox, SandboxConfig, SandboxError, SandboxUnavailable
from thor_core.sandbox.server import SandboxServer

TOKEN = "test-token"


@pytest.fixture(scope="module")
def server():
    with Sandbox(SandboxConfig(timeout_s=5.0, preload=("sympy",))) as sb:
        srv = SandboxServer(sb, token=TOKEN).start()
        yield srv
        srv.close()


def post(url, body, token=TOKEN):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_binds_loopback_by_default(server):
    assert server.url.startswith("http://127.0.0.1:")


def test_run_code_speaks_sandboxfusion(server):
    ok = post(server.url + "/run_code", {"code": "print(1 + 1)", "language": "python", "run_timeout": 5})
    assert ok["status"] == "Success" and ok["run_result"]["status"] == "Finished"
    assert ok["run_result"]["stdout"] == "2\n" and ok["run_result"]["return_code"] == 0
    assert isinstance(ok["run_result"]["execution_time"], float) and ok["compile_result"] is None
    failed = post(server.url + "/run_code", {"code": "1/0", "language": "python"})
    assert failed["status"] == "Failed" and "ZeroDivisionError" in failed["run_result"]["stderr"]
    assert failed["run_result"]["return_code"] == 1
    slow = post(server.url + "/run_code", {"code": "while True: pass", "language": "python", "run_timeout": 0.5})
    assert slow["status"] == "Failed" and slow["run_result"]["status"] == "TimeLimitExceeded"
    other = post(server.url + "/run_code", {"code": "int main(){}", "language": "cpp"})
    assert other["status"] == "SandboxError" and "python only" in other["message"]


def test_a_token_is_required(server):
    with pytest.raises(urllib.error.HTTPError) as info:
        post(server.url + "/run_code", {"code": "print(1)"}, token=None)
    assert info.value.code == 401
    with pytest.raises(urllib.error.HTTPError):
        post(server.url + "/run_code", {"code": "print(1)"}, token="wrong")


def test_remote_sessions_keep_state_and_roll_back(server):
    remote = RemoteSandbox(server.url, token=TOKEN)
    with remote.session() as s:
        s.run("x = 20")
        assert not s.run("x = 0\n1/0").success
        result = s.run("print(x + 1)")
        assert result.success and result.observation == "21"
    with pytest.raises(SandboxError):
        s.run("print(x)")


def test_remote_one_shot_batch_and_health(server):
    remote = RemoteSandbox(
        server.url,
        token=TOKEN,
        cfg=SandboxConfig(observation=tir.ObservationFormat(max_chars=4, head_chars=2, tail_chars=2)),
    )
    result = remote.run("print('abcdefgh')")
    assert result.success and result.observation == "ab...gh"  # the client's observation format
    s = remote.session()
    results = remote.run_batch([(s, "y = 3"), (None, "print(7)"), (s, "print(y)")])
    assert [r.stdout for r in results] == ["", "7\n", "3\n"]
    s.close()
    report = remote.health_check()
    assert report == remote.isolation_report() and "seccomp" in report


def test_remote_spreads_over_hosts_and_skips_a_dead_one(server):
    dead = f"http://127.0.0.1:{unused_port()}"
    remote = RemoteSandbox([dead, server.url], token=TOKEN, backoff_s=0.01)
    for _ in range(4):
        assert remote.run("print('up')").stdout == "up\n"
    with pytest.raises(SandboxUnavailable, match=dead):
        remote.health_check()


def test_health_check_fails_fast_on_a_wrong_token(server):
    with pytest.raises(SandboxUnavailable, match="401"):
        RemoteSandbox(server.url, token="wrong").health_check()


def test_unknown_session_is_a_clear_error(server):
    with pytest.raises(urllib.error.HTTPError) as info:
        post(server.url + "/sessions/nope/run", {"code": "print(1)"})
    assert info.value.code == 404
