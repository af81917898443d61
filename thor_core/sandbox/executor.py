"""The caller's side: ``Sandbox`` (one template process) and ``Session`` (one trajectory's state).

Covered: starting the template with a scrubbed environment, opening sessions
(in the background: ``sandbox.session()`` never blocks an event loop, and the
open overlaps the model's generation), running cells with a reply deadline, one-shot runs on a pool of
stateless sessions, batches run concurrently with order kept, the health
check and isolation report, and closing everything (also at interpreter exit;
a forked copy of the caller never closes its parent's sandbox).

Thread safety: ``Session.run`` may be called from many threads for different
sessions at once (each session has its own channel and lock); calls on one
session are serialised. Not covered: the processes' side (``forkserver``).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from thor_core.sandbox import isolation, resources
from thor_core.sandbox.config import ExecResult, SandboxConfig, SandboxError, SandboxUnavailable
from thor_core.sandbox.wire import Channel, ProtocolError

_BOOT = (
    "import sys; sys.path.insert(0, {path!r}); "
    "from thor_core.sandbox.forkserver import template_main; sys.path.pop(0); template_main()"
)
_TEMPLATE_START_TIMEOUT_S = 120.0
_OPEN_TIMEOUT_S = 60.0
_REPLY_MARGIN_S = 30.0  # beyond the cell's own timeout: the holder's cleanup, a loaded machine


class Session:
    """A trajectory's persistent Python state: each successful cell's variables, imports and functions carry on.

    A failed cell (exception, exit, crash, timeout, limit) is rolled back: the
    next cell sees the state from before it. The session starts opening in
    the background at once (so it is usually ready when the model's first
    code block arrives); its first cell waits for that if needed.
    """

    def __init__(self, sandbox: Sandbox, stateful: bool = True):
        self._sandbox = sandbox
        self.stateful = stateful
        self.info: dict = {}  # after opening: holder pid, work dir, isolation report
        self._channel: Channel | None = None
        self._opening: Future | None = sandbox._open_in_background()
        self._lock = threading.Lock()
        self.closed = False

    def _opened_channel(self) -> Channel:
        if self._channel is None:
            opening, self._opening = self._opening, None
            try:
                self._channel, self.info = opening.result() if opening else self._sandbox._open_holder()
            except BaseException:
                self.closed = True
                raise
        return self._channel

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        """Run one cell (``timeout_s`` None = the sandbox's default); raises SandboxError if the sandbox broke."""
        timeout = self._sandbox.cfg.timeout_s if timeout_s is None else float(timeout_s)
        if not timeout > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        with self._lock:
            if self.closed:
                raise SandboxError("this session is closed")
            channel = self._opened_channel()
            try:
                channel.send({"op": "run", "code": code, "timeout_s": timeout, "keep": self.stateful})
                reply, _ = channel.receive(timeout=timeout + _REPLY_MARGIN_S)
                outcome = reply["outcome"]
            except (OSError, EOFError, TimeoutError, ProtocolError, KeyError) as exc:
                self._abandon()
                raise SandboxError(f"the session's holder process stopped answering ({exc!r}); session closed") from exc
        return ExecResult.from_outcome(outcome, self._sandbox.cfg.observation)

    def close(self) -> None:
        """Kill the session's processes and remove its cgroups and work dir (waits for the holder's word)."""
        with self._lock:
            try:
                channel = None if self.closed else self._opened_channel()
            except Exception:  # it never opened: nothing to close
                channel = None
            if channel is not None:
                try:
                    channel.send({"op": "close"}, timeout=10)
                    channel.receive(timeout=10)
                except (OSError, EOFError, TimeoutError, ProtocolError):
                    pass
            self._abandon()
        self._sandbox._forget(self)

    def _abandon(self) -> None:
        self.closed = True
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Sandbox:
    """A template process and the sessions forked from it. See the package docstring for an example."""

    def __init__(self, cfg: SandboxConfig | None = None, **overrides):
        self.cfg = cfg if cfg is not None else SandboxConfig(**overrides)
        self._owner_pid = os.getpid()
        self._control_lock = threading.Lock()
        self._sessions: set[Session] = set()
        self._idle_oneshot: list[Session] = []
        self._pool_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._openers: ThreadPoolExecutor | None = None
        self._openers_lock = threading.Lock()
        self._report: dict[str, str] | None = None
        self.closed = False
        if os.geteuid() == 0:
            resources.remove_stale(self.cfg)
        self._start_template()
        atexit.register(_close_at_exit, weakref.ref(self))

    # -------------------------------------------------------- template and holders

    def _start_template(self) -> None:
        ours, theirs = socket.socketpair()
        theirs.set_inheritable(True)
        package_parent = str(Path(__file__).resolve().parents[2])
        self._process = subprocess.Popen(
            [
                self.cfg.python,
                "-I",
                "-B",
                "-c",
                _BOOT.format(path=package_parent),
                str(theirs.fileno()),
                str(os.getpid()),
            ],
            env=isolation.clean_environment(self.cfg),
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,
        )
        theirs.close()
        self._control = Channel(ours)
        try:
            self._control.send({"config": self.cfg.to_dict()})
            ready, _ = self._control.receive(timeout=_TEMPLATE_START_TIMEOUT_S)
        except (OSError, EOFError, TimeoutError, ProtocolError) as exc:
            self._process.kill()
            raise SandboxUnavailable(
                f"the sandbox template process did not start ({exc!r}, exit code {self._process.poll()}); "
                f"check that {self.cfg.python} can import thor_core and the preload {list(self.cfg.preload)}"
            ) from exc
        if ready["failed"]:
            self._control.close()
            self._process.kill()
            self._process.wait()
            self.closed = True
            raise SandboxUnavailable(
                f"the sandbox template failed to prepare: {ready['failed']}; install the modules or remove them "
                "from SandboxConfig.preload (or fix SandboxConfig.warmup)"
            )
        self.template_pid = ready["pid"]

    def _open_in_background(self) -> Future:
        with self._openers_lock:
            if self._openers is None:
                self._openers = ThreadPoolExecutor(4, thread_name_prefix="sandbox-open")
            return self._openers.submit(self._open_holder)

    def _open_holder(self) -> tuple[Channel, dict]:
        """Ask the template for a session holder; returns its channel and its opening message."""
        ours, theirs = socket.socketpair()
        with self._control_lock:
            if self.closed:
                raise SandboxError("the sandbox is closed")
            if self._process.poll() is not None:  # the template died: start another (open sessions live on)
                self._control.close()
                self._start_template()
            try:
                self._control.send({"op": "open"}, fds=[theirs.fileno()])
                self._control.receive(timeout=_OPEN_TIMEOUT_S)
            except (OSError, EOFError, TimeoutError, ProtocolError) as exc:
                raise SandboxError(f"the sandbox template did not open a session ({exc!r})") from exc
            finally:
                theirs.close()
        channel = Channel(ours)
        try:
            opened, _ = channel.receive(timeout=_OPEN_TIMEOUT_S)
        except (OSError, EOFError, TimeoutError, ProtocolError) as exc:
            channel.close()
            raise SandboxError(f"the session holder did not start ({exc!r})") from exc
        if not opened["opened"]:
            channel.close()
            raise SandboxUnavailable(opened["error"] + "; set SandboxConfig(strict=False) to run with what there is")
        self._report = self._report or opened["report"]
        return channel, opened

    # -------------------------------------------------------- sessions and runs

    def session(self) -> Session:
        """A new stateful session, opening in the background; close it, or use it as a context manager."""
        with self._pool_lock:
            if self.closed:
                raise SandboxError("the sandbox is closed")
            session = Session(self)
            self._sessions.add(session)
        return session

    def _forget(self, session: Session) -> None:
        with self._pool_lock:
            self._sessions.discard(session)

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        """A stateless one-shot run: a fresh copy of the preloaded interpreter and an empty work dir."""
        with self._pool_lock:
            if self.closed:
                raise SandboxError("the sandbox is closed")
            session = self._idle_oneshot.pop() if self._idle_oneshot else None
            if session is None:
                session = Session(self, stateful=False)
                self._sessions.add(session)
        result = session.run(code, timeout_s)  # a SandboxError leaves the session closed and out of the pool
        with self._pool_lock:
            if self.closed:
                session.close()
            else:
                self._idle_oneshot.append(session)
        return result

    def run_batch(self, items: Sequence[tuple], timeout_s: float | None = None) -> list[ExecResult]:
        """Run ``(session_or_None, code[, timeout_s])`` items concurrently; results in item order.

        Items of one session run one after another in the given order; items
        with None are independent one-shot runs.
        """
        by_session: dict[int, list[int]] = {}
        groups: list[list[int]] = []
        for i, item in enumerate(items):
            if item[0] is None:
                groups.append([i])
            else:
                by_session.setdefault(id(item[0]), []).append(i)
        groups += by_session.values()
        results: list[ExecResult | None] = [None] * len(items)

        def run_group(indices: list[int]) -> None:
            for i in indices:
                session, code = items[i][0], items[i][1]
                timeout = items[i][2] if len(items[i]) > 2 else timeout_s
                results[i] = session.run(code, timeout) if session is not None else self.run(code, timeout)

        with self._pool_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.cfg.max_workers, thread_name_prefix="sandbox-batch")
        for future in [self._executor.submit(run_group, group) for group in groups]:
            future.result()
        return results

    # -------------------------------------------------------- checks

    def isolation_report(self) -> dict[str, str]:
        """Layer -> "active" | "missing: <why>", as the first session found it on this machine."""
        if self._report is None:
            self.run("pass")
        return dict(self._report)

    def health_check(self) -> dict[str, str]:
        """Fail fast with SandboxUnavailable unless a cell runs and prints; returns the isolation report."""
        if self.closed:
            raise SandboxUnavailable("the sandbox is closed; create a new Sandbox")
        try:
            result = self.run("print(1 + 1)", timeout_s=max(self.cfg.timeout_s, 10.0))
        except SandboxError as exc:
            raise SandboxUnavailable(f"the sandbox cannot run code: {exc}") from exc
        if not result.success or result.stdout.strip() != "2":
            raise SandboxUnavailable(
                "the sandbox ran 'print(1 + 1)' but did not print 2 "
                f"(stdout {result.stdout[-200:]!r}, stderr {result.stderr[-500:]!r}); "
                "see docs/sandbox.md for the layers a machine needs"
            )
        report = self.isolation_report()
        missing = [f"{layer}: {report[layer]}" for layer in self.cfg.layers_required() if report[layer] != "active"]
        if self.cfg.strict and missing:
            raise SandboxUnavailable("strict mode: required isolation layers are missing: " + "; ".join(missing))
        return report

    # -------------------------------------------------------- end

    def close(self) -> None:
        """Close every session (killing their processes) and stop the template. Idempotent."""
        with self._pool_lock:
            if self.closed:
                return
            self.closed = True
            sessions = list(self._sessions)
            self._idle_oneshot.clear()
        if os.getpid() != self._owner_pid:  # a forked copy of the caller: leave the real owner's sandbox alone
            return
        for session in sessions:
            session.close()
        for pool in (self._executor, self._openers):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        with self._control_lock:
            try:
                self._control.send({"op": "exit"}, timeout=5)
            except OSError:
                pass
            self._control.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _close_at_exit(ref: weakref.ref) -> None:
    sandbox = ref()
    if sandbox is not None:
        sandbox.close()
