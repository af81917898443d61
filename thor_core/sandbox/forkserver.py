"""The trusted processes: the template and one holder per session.

Process tree (all but the caller forked, never exec'd)::

    caller (Sandbox)          your process
     └─ template              trusted: imports the preload, runs the warm-up, gc.freeze(); never runs model code
         └─ holder            trusted, one per session: root, outside the session's cgroups,
             │                subreaper of everything below; enforces every limit
             └─ state         sandboxed: the session's Python state (a fork of the holder, so it
                 └─ spare     starts warm); keeps one spare fork of itself ready for the next cell

The caller talks to the template only to open a session (it passes one end
of a socket pair, and the holder answers on it); every cell then goes caller
-> holder -> spare directly, so sessions run in parallel.

Per cell the holder sends the spare the code and two pipes (stdout,
stderr), then watches, with one poll: the pipes (capped, drained as they
fill), the spare's "done" message, the state's report that the spare's
process ended, the memory cgroup's OOM eventfd, and the wall-clock deadline.
On success the spare becomes the state and every other process of the
session is killed; on any failure every process but the old state is killed
(rollback). After replying, the holder has the state fork the next spare.
Nothing is ever waited on by EOF of a pipe a cell could hold.

Covered: ``template_main`` (the template's loop; it exits when its caller
dies, watched through a pidfd) and ``holder_main``/``SessionHolder``. Not
covered: the layers (``isolation``), what runs inside (``cell``).
"""

from __future__ import annotations

import builtins
import gc
import importlib
import math
import os
import select
import signal
import socket
import sys
import time
import traceback

from thor_core.sandbox import isolation, resources
from thor_core.sandbox.cell import serve_state
from thor_core.sandbox.config import SandboxConfig
from thor_core.sandbox.wire import Channel, ProtocolError

_PR_SET_CHILD_SUBREAPER = 36
_STATE_START_TIMEOUT_S = 30.0
_CELL_MESSAGE_MAX = 4096  # what a sandboxed process may send the holder in one message


# ---------------------------------------------------------------- template


def template_main() -> None:
    """Entry point of the template process: ``python -c ... CONTROL_FD CALLER_PID``."""
    control = Channel(socket.socket(fileno=int(sys.argv[1])))
    caller_pid = int(sys.argv[2])
    caller_pidfd = os.pidfd_open(caller_pid)
    if os.getppid() != caller_pid:  # the caller died before we watched it
        os._exit(0)
    request, _ = control.receive(timeout=60)
    cfg = SandboxConfig.from_dict(request["config"])
    preloaded, failed = [], {}
    for name in cfg.preload:
        try:
            importlib.import_module(name)
            preloaded.append(name)
        except Exception as exc:  # reported; the caller decides
            failed[name] = f"{type(exc).__name__}: {exc}"
    if cfg.warmup and not failed:
        try:
            exec(compile(cfg.warmup, "<sandbox warmup>", "exec"), {"__name__": "__warmup__"})
        except Exception as exc:  # reported; the caller decides
            failed["warmup"] = f"{type(exc).__name__}: {exc}"
    scratch: dict = {"__name__": "__prefault__"}
    for line in cfg.prefault.splitlines() if not failed else ():  # its results cached: spares only copy pages
        try:
            exec(compile(line, "<sandbox prefault>", "exec"), scratch)
        except Exception:  # as in the spares: stop at the first line that fails
            break
    plan = isolation.prepare_plan(cfg)
    gc.collect()
    gc.freeze()  # forks no longer copy pages when a collection walks the preloaded objects
    control.send({"ready": True, "pid": os.getpid(), "preloaded": preloaded, "failed": failed})

    slots: dict[int, int] = {}  # holder pid -> slot (its uid and resource names)
    poller = select.poll()
    poller.register(control.fileno(), select.POLLIN)
    poller.register(caller_pidfd, select.POLLIN)
    while True:
        events = dict(poller.poll(1000))
        _reap_holders(slots, cfg)
        if caller_pidfd in events:
            break
        if control.fileno() not in events:
            continue
        try:
            request, fds = control.receive(timeout=10)
        except (EOFError, TimeoutError, ProtocolError):
            break
        if request.get("op") == "open" and len(fds) == 1:
            slot = min(set(range(len(slots) + 1)) - set(slots.values()))
            pid = os.fork()
            if pid == 0:
                try:
                    control.close()
                    holder_main(Channel(socket.socket(fileno=fds[0])), caller_pidfd, cfg, plan, slot)
                except BaseException:
                    traceback.print_exc()  # the template's stderr is the caller's
                finally:
                    os._exit(0)
            os.close(fds[0])
            slots[pid] = slot
            control.send({"pid": pid})
        elif request.get("op") == "exit":
            break
        else:
            for fd in fds:
                os.close(fd)
            control.send({"error": f"unknown request {request.get('op')!r}"})
    os._exit(0)  # holders notice the caller's end themselves and clean up


def _reap_holders(slots: dict[int, int], cfg: SandboxConfig) -> None:
    """Forget finished holders; clean up after one that was killed before it could clean up itself."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if slots.pop(pid, None) is not None and os.WIFSIGNALED(status):
            resources.remove_session_leftovers(str(pid), cfg)


# ---------------------------------------------------------------- holder


def holder_main(
    channel: Channel, caller_pidfd: int, cfg: SandboxConfig, plan: isolation.IsolationPlan, slot: int
) -> None:
    """Serve one session's requests from the caller until it closes the session or dies."""
    isolation.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up (finally) when terminated
    # Resources are named after the holder's pid (a later sandbox cleans up after dead holders);
    # the uid after the template's pid and the slot, so sessions of concurrent sandboxes differ.
    holder = SessionHolder(cfg, plan, str(os.getpid()), cfg.uid_base + (os.getppid() % 100_000) * 1000 + slot % 1000)
    try:
        missing = holder.start()
        channel.send(
            {
                "opened": not missing,
                "error": missing,
                "pid": os.getpid(),
                "report": holder.report,
                "workdir": holder.workdir,
                "cgroups": holder.cgroups.dirs,
            }
        )
        if missing:
            return
        poller = select.poll()
        poller.register(channel.fileno(), select.POLLIN)
        poller.register(caller_pidfd, select.POLLIN)
        while True:
            if caller_pidfd in dict(poller.poll()):
                return
            try:
                request, _ = channel.receive(timeout=10)
            except (EOFError, TimeoutError, ProtocolError):
                return
            if request.get("op") == "run":
                outcome = holder.run(str(request["code"]), float(request["timeout_s"]), bool(request["keep"]))
                channel.send({"outcome": outcome})
                holder.settle()
            elif request.get("op") == "close":
                holder.close()
                channel.send({"closed": True})
                return
            else:
                channel.send({"error": f"unknown request {request.get('op')!r}"})
    except KeyboardInterrupt:  # SIGTERM
        pass
    finally:
        holder.close()


class _Capture:
    """One output stream of a cell: keeps the first and last bytes up to ``limit``, counts the rest."""

    def __init__(self, limit: int):
        self.head_limit, self.tail_limit = limit - limit // 2, limit // 2
        self.head, self.tail = bytearray(), bytearray()
        self.total = 0

    def read_from(self, fd: int, max_chunks: int = 16) -> bool:
        """Read what is there (a bounded amount, so one flood cannot starve the loop); False at EOF."""
        for _ in range(max_chunks):
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                return True
            if not data:
                return False
            self.total += len(data)
            take = max(self.head_limit - len(self.head), 0)
            self.head += data[:take]
            self.tail += data[take:]
            del self.tail[: max(len(self.tail) - self.tail_limit, 0)]
        return True

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        cut = f"\n...[{dropped} bytes not kept]...\n".encode() if dropped else b""
        return (bytes(self.head) + cut + bytes(self.tail)).decode("utf-8", "replace")


class SessionHolder:
    """One session, from the trusted side: its resources, its state process and spare, its cells."""

    def __init__(self, cfg: SandboxConfig, plan: isolation.IsolationPlan, name: str, uid: int):
        self.cfg, self.plan, self.uid = cfg, plan, uid
        self.cgroups = resources.SessionCgroups(name, cfg)
        self.workdir = resources.make_workdir(cfg, name)
        self.report: dict[str, str] = {}
        self.state_pid: int | None = None
        self.state_channel: Channel | None = None
        self.spare: Channel | None = None  # channel to the state's spare (forked ahead, waiting for a cell)
        self.spares = 0  # numbers the spares, so a late report about an old one is not taken for the current
        self.retired: int | None = None  # the state a successful cell replaced: killed, maybe still exiting
        self.cells = 0
        self.closed = False
        self.prefault = tuple(
            compile(line, "<sandbox prefault>", "exec") for line in cfg.prefault.splitlines() if line.strip()
        )

    # -------------------------------------------------------- state processes

    def start(self) -> str:
        """Start the first state; returns "" or, in strict mode, what required layers are missing."""
        self._start_state()
        missing = [
            f"{layer} ({self.report[layer]})" for layer in self.cfg.layers_required() if self.report[layer] != "active"
        ]
        if self.cfg.strict and missing:
            return "strict mode: required isolation layers are missing: " + "; ".join(missing)
        return ""

    def _start_state(self) -> None:
        """Fork a fresh state from this process (it holds the preload, no model state) and sandbox it."""
        mine, theirs = Channel.pair()
        pid = os.fork()
        if pid == 0:
            try:
                mine.close()
                spec = isolation.SessionSpec(self.cgroups.procs_files(), self.cgroups.problems, self.workdir, self.uid)
                report = isolation.enter_sandbox(self.plan, self.cfg, spec, keep_fds=(theirs.fileno(),))
                theirs.send({"ready": report})
                namespace = {"__name__": "__main__", "__builtins__": builtins}
                serve_state(theirs, self.plan.devnull_fd, namespace, self.prefault)
            except BaseException:
                traceback.print_exc()  # reaches the caller's stderr only before the sandbox closed it
            finally:
                os._exit(70)
        theirs.close()
        message, _ = mine.receive(timeout=_STATE_START_TIMEOUT_S)
        self.report, self.state_pid, self.state_channel = message["ready"], pid, mine
        mine.max_message_bytes = _CELL_MESSAGE_MAX  # from now on it speaks for model code
        self._ensure_spare()

    def _ensure_spare(self) -> None:
        """Have the state fork its spare now, so the next cell skips the fork (the request waits in the socket)."""
        if self.spare is None:
            mine, theirs = socket.socketpair()
            self.spares += 1
            self.state_channel.send({"spare": self.spares}, fds=(theirs.fileno(),), timeout=5.0)
            theirs.close()
            self.spare = Channel(mine, max_message_bytes=_CELL_MESSAGE_MAX)

    def _restart_state(self) -> None:
        """The state died or cannot go on: kill the session's processes and start over from the preload."""
        resources.kill_session_processes(self.cgroups, os.getpid(), keep=None)
        for channel in (self.state_channel, self.spare):
            if channel is not None:
                channel.close()
        self.spare = None
        self.cgroups.clear_oom_event()
        self._start_state()

    # -------------------------------------------------------- cells

    def run(self, code: str, timeout_s: float, keep: bool) -> dict:
        """Run one cell; returns the outcome (JSON-able): exited_cleanly, stdout, stderr, flags, duration_s."""
        start = time.monotonic()
        self.cells += 1
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        os.set_blocking(out_r, False)
        os.set_blocking(err_r, False)
        captures = (_Capture(self.cfg.max_output_bytes), _Capture(self.cfg.max_output_bytes))
        request = {"cell": self.cells, "code": code, "keep": keep, "cpu_s": math.ceil(timeout_s) + 1}
        try:
            self._ensure_spare()
            cell_channel, self.spare = self.spare, None
            cell_channel.send(request, fds=(out_w, err_w), timeout=timeout_s)
            ending, message, exit_code = self._watch(
                start + timeout_s, dict(zip((out_r, err_r), captures)), cell_channel
            )
        except (OSError, TimeoutError):
            ending, message, exit_code = "lost", {}, None
        finally:
            os.close(out_w)
            os.close(err_w)
        duration = time.monotonic() - start
        if ending == "done" and keep and not self._adopt(message, cell_channel):
            ending = "unadoptable"
        if not (ending == "done" and keep):
            cell_channel.close()
            self._clean_up(ending, message)
        if not keep:  # one-shot runs always start from an empty work dir
            root = f"/proc/{self.state_pid}/root" if self.report.get("private_tmpfs") == "active" else ""
            resources.clear_workdir(root + self.workdir)
        for fd, capture in zip((out_r, err_r), captures):
            capture.read_from(fd, max_chunks=64)
            os.close(fd)
        stdout, stderr = captures[0].text(), captures[1].text()
        note = self._note(ending, exit_code, timeout_s)
        if note:
            stderr = (stderr if not stderr or stderr.endswith("\n") else stderr + "\n") + note + "\n"
        error_name = stderr.strip().rsplit("\n", 1)[-1].split(":", 1)[0].rsplit(".", 1)[-1]
        return {
            "exited_cleanly": ending == "done",
            "stdout": stdout,
            "stderr": stderr,
            "timed_out": ending == "timeout",
            "killed": ending in ("timeout", "oom", "flood"),
            "oom": ending == "oom" or error_name.endswith("MemoryError"),  # numpy's _ArrayMemoryError too
            "duration_s": duration,
        }

    def _watch(
        self, deadline: float, streams: dict[int, _Capture], cell_channel: Channel
    ) -> tuple[str, dict, int | None]:
        """Poll until the cell ends; returns (ending, its done message, the exit code the state reported)."""
        cell, spare = self.cells, self.spares
        state_fd, cell_fd, oom_fd = self.state_channel.fileno(), cell_channel.fileno(), self.cgroups.oom_eventfd
        poller = select.poll()
        for fd in (*streams, state_fd, cell_fd) + ((oom_fd,) if oom_fd is not None else ()):
            poller.register(fd, select.POLLIN)
        ending, done, exit_code = "", {}, None
        while not ending:
            left = deadline - time.monotonic()
            if left <= 0:
                ending = "timeout"
                break
            for fd, _event in poller.poll(max(1, math.ceil(left * 1000))):
                if fd in streams:
                    if not streams[fd].read_from(fd):
                        poller.unregister(fd)
                    if sum(c.total for c in streams.values()) > self.cfg.output_limit_bytes:
                        ending = ending or "flood"
                elif fd == cell_fd:
                    done = self._done_message(cell_channel, cell) or done
                    if not done:
                        poller.unregister(fd)  # closed without a word: the state's report will say why
                    else:
                        ending = "done"
                elif fd == state_fd:
                    try:
                        for message in self.state_channel.read_available():
                            if message.get("exited") == spare:
                                exit_code = message.get("exit_code")
                                ending = ending or "exited"
                    except (EOFError, ProtocolError):
                        ending = ending or "lost"
                        poller.unregister(fd)
                elif fd == oom_fd:
                    ending = ending or "oom"
        if ending != "done":  # a done message may have raced the report of the exit that followed it
            done = self._done_message(cell_channel, cell)
            if done and ending in ("exited", "timeout"):
                ending = "done"
        return ending, done, exit_code

    @staticmethod
    def _done_message(cell_channel: Channel, cell: int) -> dict:
        try:
            messages = cell_channel.read_available()
        except (EOFError, ProtocolError):
            return {}
        return next((m for m in messages if m.get("done") == cell), {})

    def _adopt(self, done: dict, cell_channel: Channel) -> bool:
        """Make the cell's process (or its thread-free fork) the session state; kill everything else."""
        new_state = done.get("state_pid")
        live = resources.session_processes(self.cgroups, os.getpid())
        if not isinstance(new_state, int) or new_state not in live or new_state == os.getpid():
            return False
        old_state, old_channel = self.state_pid, self.state_channel
        self.state_pid, self.state_channel, self.retired = new_state, cell_channel, old_state
        old_channel.close()
        resources.kill_session_processes(
            self.cgroups, os.getpid(), keep=new_state, wait=bool(set(live) - {new_state, old_state, done.get("pid")})
        )
        return True

    def _clean_up(self, ending: str, done: dict) -> None:
        """Kill every process but the state (rollback); restart the state if it is gone or itself over the memory limit.

        After a one-shot cell that finished, its own process is already on
        its way out: only other processes are waited for.
        """
        live = resources.session_processes(self.cgroups, os.getpid())
        finished_alone = ending == "done" and not set(live) - {self.state_pid, done.get("pid")}
        resources.kill_session_processes(self.cgroups, os.getpid(), keep=self.state_pid, wait=not finished_alone)
        if ending == "oom":
            self.cgroups.clear_oom_event()
        if ending in ("lost", "unadoptable") or self.cgroups.under_oom():
            self._restart_state()

    def _note(self, ending: str, exit_code: int | None, timeout_s: float) -> str:
        """The line the trusted side adds to stderr, so the observation names why the cell ended."""
        if ending == "timeout":
            return f"TimeoutError: the cell ran longer than {timeout_s:g} s and was stopped"
        if ending == "oom":
            return f"MemoryError: the session ran out of memory ({self.cfg.memory_mb} MB) and the cell was stopped"
        if ending == "flood":
            return f"OutputLimitError: the cell wrote more than {self.cfg.output_limit_bytes} bytes and was stopped"
        if ending in ("lost", "unadoptable"):
            return "SandboxError: the session's state process was lost; the session restarted from a fresh state"
        if ending == "exited" and exit_code is not None and exit_code < 0:
            return f"Error: the cell's process was killed by signal {signal.Signals(-exit_code).name}"
        if ending == "exited" and exit_code not in (None, 1):
            return f"SystemExit: the cell ended its process (exit status {exit_code}) before finishing"
        return ""

    def settle(self) -> None:
        """After the reply is out: make sure nothing but the state is left, then have it fork the next spare.

        The replaced state was killed already; its exit (unmapping its memory)
        finishes in the background instead of delaying the next cell.
        """
        live = set(resources.session_processes(self.cgroups, os.getpid())) - {self.state_pid, self.retired}
        if live:
            resources.kill_session_processes(self.cgroups, os.getpid(), keep=self.state_pid)
        self.retired = None
        resources.reap_children()
        try:
            self._ensure_spare()
        except (OSError, TimeoutError):  # the next run finds the state gone and restarts it
            self.spare = None

    # -------------------------------------------------------- end

    def close(self) -> None:
        """Kill every process of the session, remove its cgroups and work dir (idempotent)."""
        if self.closed:
            return
        self.closed = True
        resources.kill_session_processes(self.cgroups, os.getpid(), keep=None)
        resources.reap_children()
        for channel in (self.state_channel, self.spare):
            if channel is not None:
                channel.close()
        self.cgroups.remove()
        resources.remove_workdir(self.workdir)
