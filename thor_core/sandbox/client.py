"""``RemoteSandbox``: the ``Sandbox`` interface over HTTP, spread over one or more sandbox hosts.

Covered: one-shot runs (retried with backoff on connection errors and 5xx,
moving to the next host: they are stateless, so a retry is harmless),
sessions (pinned to the host that opened them; a run is retried only when
the connection was refused, i.e. the request never arrived, because a
stateful cell must not run twice), batches with the local ordering rules, the
health check over every host, and the isolation report of each host.
Results are rebuilt from the server's raw fields with this side's
``ObservationFormat``.

Not covered: TLS client certificates; HTTP keep-alive (each call opens a
connection: about 0.3 ms on a LAN, small next to a cell).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from thor_core.sandbox.config import ExecResult, SandboxConfig, SandboxError, SandboxUnavailable

_REPLY_MARGIN_S = 30.0


class _Refused(Exception):
    """The host refused the connection: the request certainly did not run."""


class RemoteSession:
    """A session on one sandbox host; opened at its first cell, like ``Session``."""

    def __init__(self, remote: RemoteSandbox, url: str):
        self._remote, self.url = remote, url
        self.session_id: str | None = None
        self._lock = threading.Lock()
        self.closed = False

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        timeout = self._remote.cfg.timeout_s if timeout_s is None else float(timeout_s)
        with self._lock:
            if self.closed:
                raise SandboxError("this session is closed")
            if self.session_id is None:
                self.session_id = self._remote._call(self.url, "POST", "/sessions", {}, retry_refused_only=True)[
                    "session_id"
                ]
            reply = self._remote._call(
                self.url,
                "POST",
                f"/sessions/{self.session_id}/run",
                {"code": code, "timeout_s": timeout},
                timeout + _REPLY_MARGIN_S,
                retry_refused_only=True,
            )
        return ExecResult.from_outcome(reply["result"], self._remote.cfg.observation)

    def close(self) -> None:
        with self._lock:
            if self.session_id is not None and not self.closed:
                try:
                    self._remote._call(
                        self.url, "DELETE", f"/sessions/{self.session_id}", None, retry_refused_only=True
                    )
                except SandboxError:
                    pass  # the host closes idle sessions itself
            self.closed = True

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RemoteSandbox:
    """Talks to ``thor_core.sandbox.server`` hosts; same methods as ``Sandbox``.

    ``cfg`` supplies the default timeout and the observation format (its
    isolation settings belong to the hosts).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        token: str | None = None,
        cfg: SandboxConfig | None = None,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_workers: int = 16,
    ):
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("RemoteSandbox needs at least one URL")
        self.urls = [u.rstrip("/") for u in self.urls]
        self.token, self.cfg = token, cfg or SandboxConfig()
        self.retries, self.backoff_s, self.max_workers = retries, backoff_s, max_workers
        self._next_host = itertools.cycle(self.urls)
        self._host_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._reports: dict[str, dict[str, str]] = {}

    def _pick_host(self) -> str:
        with self._host_lock:
            return next(self._next_host)

    def _request(self, url: str, method: str, path: str, body: dict | None, timeout: float) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            if exc.code in (401, 403):
                raise SandboxUnavailable(f"{method} {url}{path}: HTTP {exc.code} {detail}") from None
            raise SandboxError(f"{method} {url}{path}: HTTP {exc.code} {detail}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError):
                raise _Refused(f"{url}: connection refused") from None
            raise SandboxError(f"{method} {url}{path}: {exc.reason}") from None
        except (OSError, ValueError) as exc:
            raise SandboxError(f"{method} {url}{path}: {exc!r}") from None

    def _call(
        self,
        url: str | None,
        method: str,
        path: str,
        body: dict | None,
        timeout: float = 30.0,
        retry_refused_only: bool = False,
    ) -> dict:
        """One request with retries; ``url`` None means any host (tried in turn)."""
        error: Exception | None = None
        for attempt in range(self.retries + 1):
            host = url or self._pick_host()
            try:
                return self._request(host, method, path, body, timeout)
            except _Refused as exc:
                error = exc
            except SandboxError as exc:
                if retry_refused_only:
                    raise
                error = exc
            time.sleep(self.backoff_s * 2**attempt)
        raise SandboxError(f"{method} {path} failed after {self.retries + 1} tries: {error}")

    # -------------------------------------------------------- the Sandbox interface

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        timeout = self.cfg.timeout_s if timeout_s is None else float(timeout_s)
        reply = self._call(None, "POST", "/run", {"code": code, "timeout_s": timeout}, timeout + _REPLY_MARGIN_S)
        return ExecResult.from_outcome(reply["result"], self.cfg.observation)

    def session(self) -> RemoteSession:
        return RemoteSession(self, self._pick_host())

    def run_batch(self, items: Sequence[tuple], timeout_s: float | None = None) -> list[ExecResult]:
        """Same rules as ``Sandbox.run_batch``: concurrent, order kept, one session's items in order."""
        by_session: dict[int, list[int]] = {}
        groups: list[list[int]] = []
        for i, item in enumerate(items):
            (groups.append([i]) if item[0] is None else by_session.setdefault(id(item[0]), []).append(i))
        groups += by_session.values()
        results: list[ExecResult | None] = [None] * len(items)

        def run_group(indices: list[int]) -> None:
            for i in indices:
                session, code = items[i][0], items[i][1]
                timeout = items[i][2] if len(items[i]) > 2 else timeout_s
                results[i] = session.run(code, timeout) if session is not None else self.run(code, timeout)

        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="remote-sandbox")
        for future in [self._executor.submit(run_group, group) for group in groups]:
            future.result()
        return results

    def health_check(self) -> dict[str, str]:
        """Every host must answer its health check, else SandboxUnavailable; returns ``isolation_report()``."""
        reports, problems = {}, []
        for url in self.urls:
            try:
                reports[url] = self._request(url, "GET", "/health", None, timeout=60.0)["report"]
            except (SandboxError, SandboxUnavailable, _Refused, KeyError) as exc:
                problems.append(f"{url}: {exc}")
        if problems:
            raise SandboxUnavailable(
                "sandbox hosts are not healthy: "
                + "; ".join(problems)
                + " (start them with `python -m thor_core.sandbox.server`, check the URL and token)"
            )
        self._reports = reports
        return self.isolation_report()

    def isolation_report(self) -> dict[str, str]:
        """Layer -> "active" if active on every host, else "missing: <host>: <why>" (first host that lacks it)."""
        if not self._reports:
            self.health_check()
        merged: dict[str, str] = {}
        for url, report in self._reports.items():
            for layer, state in report.items():
                if state != "active" and merged.get(layer, "active") == "active":
                    merged[layer] = f"missing: {url}: {state.removeprefix('missing: ')}"
                merged.setdefault(layer, state)
        return merged

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> RemoteSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
