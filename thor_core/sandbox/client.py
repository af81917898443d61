"""``RemoteSandbox``: the ``Sandbox`` interface over HTTP, spread over one or more sandbox hosts.

Covered: one-shot runs (retried with backoff on connection errors and 5xx,
moving to the next live host: they are stateless, so a retry is harmless),
sessions (pinned to the host that opened them; each keeps the cells whose
state the host kept, i.e. those that exited cleanly), failover, batches with
the local ordering rules, the health check over every host, and the
isolation report of the live hosts. Results are rebuilt from the server's raw
fields with this side's ``ObservationFormat``.

Failover: a host that stops answering (connection refused, reset or timed out
``retries + 1`` times with backoff, its health check included) is marked down
for the rest of the run, with one line on stderr; one-shot runs go to the
other hosts, and each session that lived there (or that its host lost: HTTP
404 after a restart) opens a new session on a live host, re-runs its kept
cells there in order (their results are dropped; a cell that no longer runs
cleanly stops the run with SandboxError, as the state would differ) and then
runs the cell that was interrupted. The model sees only that cell's real
result, never the failure. With no live host left, ``SandboxUnavailable``
names every host and why it is down: the run stops, no call is scored. A
host that answers with an error (HTTP 4xx/5xx other than a lost session)
is alive and its error raises, as the local sandbox's would.

Not covered: TLS client certificates; HTTP keep-alive (each call opens a
connection: about 0.3 ms on a LAN, small next to a cell); taking a host back
once marked down (re-run the stage: it resumes); cells whose output depends
on chance or time may leave a different state when re-run on failover.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from thor_core.sandbox.config import ExecResult, SandboxConfig, SandboxError, SandboxUnavailable

_REPLY_MARGIN_S = 30.0
START_HINT = "start `python -m thor_core.sandbox.server --host 0.0.0.0 --port PORT` there (docs/sandbox.md)"


class _Unreachable(SandboxError):
    """The request got no answer (refused, reset, timed out): the host may be down."""

    def __init__(self, message: str, refused: bool):
        super().__init__(message)
        self.refused = refused


class _SessionLost(SandboxError):
    """The host answered that it has no such session (restarted, or closed it when idle): its state is gone."""


class RemoteSession:
    """A session on one sandbox host; opened at its first cell, like ``Session``; moves host on failover."""

    def __init__(self, remote: RemoteSandbox, url: str):
        self._remote, self.url = remote, url
        self.session_id: str | None = None
        self._lock = threading.Lock()
        self._kept: list[tuple[str, float]] = []  # cells whose state the host kept, to re-run on failover
        self.closed = False

    def _run_here(self, code: str, timeout: float) -> ExecResult:
        if not self._remote.is_live(self.url):
            raise _Unreachable(f"{self.url} is down: {self._remote.down[self.url]}", refused=True)
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

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        timeout = self._remote.cfg.timeout_s if timeout_s is None else float(timeout_s)
        with self._lock:
            if self.closed:
                raise SandboxError("this session is closed")
            error: SandboxError | None = None
            for _ in range(len(self._remote.urls) + self._remote.retries):
                try:
                    if error is not None:
                        self._fail_over(error)
                    result = self._run_here(code, timeout)
                    break
                except (_Unreachable, _SessionLost) as exc:
                    error = exc
            else:
                raise SandboxError(f"a session could not run its cell on any of {self._remote.urls}; last: {error}")
            if result.exited_cleanly:
                self._kept.append((code, timeout))
        return result

    def _fail_over(self, error: SandboxError) -> None:
        """Move to a new session on a live host and re-run the kept cells there (SandboxUnavailable: none left)."""
        old = self.url
        if isinstance(error, _Unreachable):
            self._remote._check_host(old, str(error))
        self._forget()
        self.url, self.session_id = self._remote._pick_host(), None
        for i, (code, timeout) in enumerate(self._kept):
            result = self._run_here(code, timeout)  # an unreachable host here fails over again (the caller's loop)
            if not result.exited_cleanly:
                raise SandboxError(
                    f"failover from sandbox host {old} to {self.url}: kept cell {i + 1} of {len(self._kept)} did not "
                    f"run cleanly again ({result.observation[-300:]!r}), so the session's state would differ"
                )
        self._remote._note_move(old, self.url)

    def _forget(self) -> None:
        """Close this session on its host, if it is still up (best effort: hosts close idle sessions themselves)."""
        if self.session_id is not None and self._remote.is_live(self.url):
            try:
                self._remote._request(self.url, "DELETE", f"/sessions/{self.session_id}", None, timeout=10.0)
            except SandboxError:
                pass

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self._forget()
            self.closed = True

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RemoteSandbox:
    """Talks to ``thor_core.sandbox.server`` hosts; same methods as ``Sandbox``.

    ``cfg`` supplies the default timeout and the observation format (its
    isolation settings belong to the hosts). ``down`` (host -> why) and
    ``moved`` ((from, to) -> sessions) say what failover did.
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
        self._checked = False  # the first health check needs every host
        self.down: dict[str, str] = {}
        self.moved: Counter[tuple[str, str]] = Counter()

    # -------------------------------------------------------- hosts

    def is_live(self, url: str) -> bool:
        return url not in self.down

    def _pick_host(self) -> str:
        """The next live host in turn; SandboxUnavailable naming every host when none is left."""
        with self._host_lock:
            for _ in range(len(self.urls)):
                host = next(self._next_host)
                if host not in self.down:
                    return host
        raise self._none_left()

    def _none_left(self) -> SandboxUnavailable:
        down = "; ".join(f"{url}: {why}" for url, why in self.down.items())
        return SandboxUnavailable(
            f"every sandbox host is down ({down}); the run stops here, no call was scored. "
            f"Restart them ({START_HINT}) or set other sandbox_urls, then re-run: the stage resumes"
        )

    def _check_host(self, url: str, why: str) -> None:
        """After a call got no answer: mark ``url`` down unless it answers a health check (retried with backoff)."""
        if not self.is_live(url):
            return
        for attempt in range(self.retries + 1):
            try:
                self._request(url, "GET", "/health", None, timeout=30.0)
                return
            except (SandboxError, SandboxUnavailable):
                time.sleep(self.backoff_s * 2**attempt)
        with self._host_lock:
            if url in self.down:
                return
            self.down[url] = why
            live = [u for u in self.urls if u not in self.down]
        where = f"its work moves to {', '.join(live)}" if live else "no sandbox host is left"
        print(f"sandbox host {url} is down ({why}); {where}", file=sys.stderr, flush=True)

    def _note_move(self, old: str, new: str) -> None:
        with self._host_lock:
            self.moved[(old, new)] += 1

    # -------------------------------------------------------- requests

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
                raise SandboxUnavailable(
                    f"{method} {url}{path}: HTTP {exc.code} {detail} (set THOR_SANDBOX_TOKEN to the hosts' token)"
                ) from None
            if exc.code == 404 and path.startswith("/sessions/") and path.endswith("/run"):
                raise _SessionLost(f"{url}: {detail}") from None
            raise SandboxError(f"{method} {url}{path}: HTTP {exc.code} {detail}") from None
        except urllib.error.URLError as exc:
            refused = isinstance(exc.reason, ConnectionRefusedError)
            raise _Unreachable(f"{method} {url}{path}: {exc.reason}", refused) from None
        except OSError as exc:  # reset, timed out, closed mid-reply
            raise _Unreachable(f"{method} {url}{path}: {exc!r}", False) from None
        except ValueError as exc:
            raise SandboxError(f"{method} {url}{path}: not JSON: {exc!r}") from None

    def _call(
        self,
        url: str | None,
        method: str,
        path: str,
        body: dict | None,
        timeout: float = 30.0,
        retry_refused_only: bool = False,
    ) -> dict:
        """One request with retries; ``url`` None means any live host (tried in turn, an unreachable one checked
        and marked down). With ``retry_refused_only`` only a refused connection is retried (the request did not
        arrive); other failures raise at once (``_Unreachable`` for no answer) for the caller to handle."""
        error: Exception | None = None
        for attempt in range(self.retries + 1):
            host = url or self._pick_host()
            try:
                return self._request(host, method, path, body, timeout)
            except _Unreachable as exc:
                if retry_refused_only and not exc.refused:
                    raise
                error = exc
                if url is None:
                    self._check_host(host, str(exc))
            except SandboxError as exc:
                if retry_refused_only:
                    raise
                error = exc
            time.sleep(self.backoff_s * 2**attempt)
        if isinstance(error, _Unreachable):
            raise _Unreachable(f"{method} {path} failed after {self.retries + 1} tries: {error}", error.refused)
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
        """The hosts' health checks; returns ``isolation_report()``.

        The first check (the run's start) needs every host: any that fails raises SandboxUnavailable naming it
        and what to do. Later checks mark a failing host down (failover) and raise only when none is left.
        """
        first = not self._checked
        reports, problems = {}, {}
        for url in [u for u in self.urls if first or self.is_live(u)]:
            try:
                reports[url] = self._request(url, "GET", "/health", None, timeout=60.0)["report"]
            except (SandboxError, SandboxUnavailable, KeyError) as exc:
                problems[url] = f"{exc}"
        if problems and first:
            raise SandboxUnavailable(
                "sandbox hosts are not healthy: "
                + "; ".join(f"{url}: {why}" for url, why in problems.items())
                + f" ({START_HINT}; check the URL and THOR_SANDBOX_TOKEN, or leave the host out of sandbox_urls)"
            )
        if first:
            with self._host_lock:
                self.down.clear()  # every host answered: any marked down before is back
            self._checked = True
        for url, why in problems.items():
            self._check_host(url, why)
        if not any(self.is_live(url) for url in self.urls):
            raise self._none_left()
        self._reports = {url: report for url, report in reports.items() if self.is_live(url)}
        return self.isolation_report()

    def isolation_report(self) -> dict[str, str]:
        """Layer -> "active" if active on every live host, else "missing: <host>: <why>" (first host that lacks it)."""
        if not self._reports:
            self.health_check()
        merged: dict[str, str] = {}
        for url, report in self._reports.items():
            if not self.is_live(url):
                continue
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
