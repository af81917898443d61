"""HTTP front of a local ``Sandbox``, so a cluster can share sandbox hosts.

Endpoints (JSON in, JSON out):

- ``POST /run_code``: SandboxFusion's shape. Request ``{"code", "language":
  "python", "run_timeout"}``; response ``{"status": "Success" | "Failed" |
  "SandboxError", "message", "compile_result": null, "run_result": {"status":
  "Finished" | "TimeLimitExceeded", "execution_time", "return_code",
  "stdout", "stderr"}, "files": {}}``. ``return_code`` is 0 for a clean run
  and 1 otherwise (a cell is not a process with its own exit status).
- ``POST /run``: a one-shot run with the full ``ExecResult`` (``{"code",
  "timeout_s"}`` -> ``{"result": {...}}``), what ``RemoteSandbox`` uses.
- ``POST /sessions`` -> ``{"session_id"}``; ``POST /sessions/<id>/run``
  ``{"code", "timeout_s"}`` -> ``{"result"}``; ``DELETE /sessions/<id>``.
- ``GET /health``: the health check; 200 ``{"ok": true, "report"}`` or 503
  ``{"ok": false, "message"}``.

Binds 127.0.0.1 by default; with a token every request needs ``Authorization:
Bearer <token>``. Sessions idle longer than ``session_idle_s`` are closed.
Not covered: SandboxFusion's other languages, stdin, and uploaded or fetched
files (requests with them get status "SandboxError"); TLS (put a proxy in
front when leaving a trusted network).

Run: ``python -m thor_core.sandbox.server --port 8080 [--host 0.0.0.0 --token T]``.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from thor_core.sandbox.config import SandboxConfig, SandboxError, SandboxUnavailable
from thor_core.sandbox.executor import Sandbox, Session

MAX_BODY_BYTES = 16 << 20


class SandboxServer:
    """Serves ``sandbox`` over HTTP; ``start()`` runs it on a background thread, ``close()`` stops it."""

    def __init__(
        self,
        sandbox: Sandbox,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        session_idle_s: float = 600.0,
    ):
        self.sandbox = sandbox
        self.token = token
        self.session_idle_s = session_idle_s
        self._sessions: dict[str, tuple[Session, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self.httpd.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SandboxServer:
        for target in (self.httpd.serve_forever, self._close_idle_sessions):
            thread = threading.Thread(target=target, daemon=True, name="sandbox-server")
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._lock:
            sessions = [s for s, _ in self._sessions.values()]
            self._sessions.clear()
        for session in sessions:
            session.close()

    # -------------------------------------------------------- sessions

    def open_session(self) -> str:
        session_id = secrets.token_hex(16)
        with self._lock:
            self._sessions[session_id] = (self.sandbox.session(), time.monotonic())
        return session_id

    def get_session(self, session_id: str) -> Session | None:
        with self._lock:
            entry = self._sessions.get(session_id)
            if entry is not None:
                self._sessions[session_id] = (entry[0], time.monotonic())
            return entry[0] if entry else None

    def close_session(self, session_id: str) -> bool:
        with self._lock:
            entry = self._sessions.pop(session_id, None)
        if entry is not None:
            entry[0].close()
        return entry is not None

    def _close_idle_sessions(self) -> None:
        while not self._stop.wait(min(self.session_idle_s / 4, 30.0)):
            now = time.monotonic()
            with self._lock:
                idle = [sid for sid, (_, seen) in self._sessions.items() if now - seen > self.session_idle_s]
            for session_id in idle:
                self.close_session(session_id)


def sandboxfusion_response(result=None, error: str = "") -> dict:
    """An ``ExecResult`` (or a sandbox-side error) in SandboxFusion's /run_code response shape."""
    if result is None:
        return {"status": "SandboxError", "message": error, "compile_result": None, "run_result": None, "files": {}}
    return {
        "status": "Success" if result.exited_cleanly else "Failed",
        "message": "",
        "compile_result": None,
        "run_result": {
            "status": "TimeLimitExceeded" if result.timed_out else "Finished",
            "execution_time": result.duration_s,
            "return_code": 0 if result.exited_cleanly else 1,
            "stdout": result.stdout,
            "stderr": result.stderr,
        },
        "files": {},
    }


def _handler_for(server: SandboxServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args) -> None:  # quiet: a rollout batch makes thousands of calls
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if server.token is None:
                return True
            given = self.headers.get("Authorization", "")
            if hmac.compare_digest(given.encode(), f"Bearer {server.token}".encode()):
                return True
            self._reply(401, {"error": "missing or wrong bearer token"})
            return False

        def _body(self) -> dict | None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._reply(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
                return None
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                body = None
            if not isinstance(body, dict):
                self._reply(400, {"error": "the body must be a JSON object"})
                return None
            return body

        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path != "/health":
                return self._reply(404, {"error": f"no such endpoint: GET {self.path}"})
            try:
                report = server.sandbox.health_check()
            except SandboxUnavailable as exc:
                return self._reply(503, {"ok": False, "message": str(exc)})
            self._reply(200, {"ok": True, "report": report})

        def do_DELETE(self) -> None:
            if not self._authorized():
                return
            parts = self.path.strip("/").split("/")
            if len(parts) == 2 and parts[0] == "sessions" and server.close_session(parts[1]):
                return self._reply(200, {"closed": True})
            self._reply(404, {"error": f"no such session or endpoint: DELETE {self.path}"})

        def do_POST(self) -> None:
            if not self._authorized():
                return
            body = self._body()
            if body is None:
                return
            parts = self.path.strip("/").split("/")
            try:
                if parts == ["run_code"]:
                    return self._run_code(body)
                if parts == ["run"]:
                    return self._reply(
                        200, {"result": server.sandbox.run(str(body["code"]), body.get("timeout_s")).to_dict()}
                    )
                if parts == ["sessions"]:
                    return self._reply(200, {"session_id": server.open_session()})
                if len(parts) == 3 and parts[0] == "sessions" and parts[2] == "run":
                    session = server.get_session(parts[1])
                    if session is None:
                        return self._reply(404, {"error": f"no such session {parts[1]!r} (closed or idle too long)"})
                    return self._reply(200, {"result": session.run(str(body["code"]), body.get("timeout_s")).to_dict()})
            except KeyError as exc:
                return self._reply(400, {"error": f"missing field {exc}"})
            except (SandboxError, SandboxUnavailable) as exc:
                return self._reply(503, {"error": str(exc)})
            self._reply(404, {"error": f"no such endpoint: POST {self.path}"})

        def _run_code(self, body: dict) -> None:
            if str(body.get("language", "python")).lower() not in ("python", "python3"):
                return self._reply(
                    200,
                    sandboxfusion_response(error=f"language {body.get('language')!r} is not supported: python only"),
                )
            if body.get("files") or body.get("fetch_files") or body.get("stdin"):
                return self._reply(200, sandboxfusion_response(error="files, fetch_files and stdin are not supported"))
            timeout = body.get("run_timeout")
            try:
                result = server.sandbox.run(str(body["code"]), None if timeout is None else float(timeout))
            except (SandboxError, SandboxUnavailable) as exc:
                return self._reply(200, sandboxfusion_response(error=str(exc)))
            self._reply(200, sandboxfusion_response(result))

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a THOR sandbox over HTTP (SandboxFusion /run_code + sessions).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--token", default=os.environ.get("THOR_SANDBOX_TOKEN"), help="bearer token (or THOR_SANDBOX_TOKEN)"
    )
    parser.add_argument("--timeout-s", type=float, default=10.0, help="default wall-clock limit per cell")
    parser.add_argument("--memory-mb", type=int, default=1024)
    parser.add_argument("--strict", action="store_true", help="refuse to run when an isolation layer is missing")
    parser.add_argument("--network-namespace", action="store_true")
    args = parser.parse_args(argv)
    cfg = SandboxConfig(
        timeout_s=args.timeout_s, memory_mb=args.memory_mb, strict=args.strict, network_namespace=args.network_namespace
    )
    with Sandbox(cfg) as sandbox:
        report = sandbox.health_check()
        server = SandboxServer(sandbox, args.host, args.port, args.token)
        print(
            f"sandbox server on {server.url}; layers: " + ", ".join(f"{k}={v}" for k, v in report.items()), flush=True
        )
        try:
            server.httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()


if __name__ == "__main__":
    main()
