"""What runs inside the sandbox: a session's state process and the cells forked from it.

The state process holds the session's Python state (its namespace) and does
nothing but keep one *spare*: a fork of itself, made ahead of time, that
waits for the next cell with the fork and Python's after-fork work already
done (they cost about as much as a trivial cell). When the holder sends the
spare a cell, the spare runs it with stdout/stderr on pipes the holder reads,
then either

- fails (exception, ``sys.exit``, crash, or is killed by the holder): the
  spare is gone, the state process reaps it, reports its exit status, and
  forks the next spare from the state it had before: that is the rollback;
- succeeds: the spare becomes the session's new state process (the holder
  kills the old one) and keeps a spare of its own. If the cell left threads
  running (started with ``threading``/``_thread``; threads a C extension
  starts on its own are not seen), it forks once more so the new state has
  only the main thread, and exits.

Covered: the loop above, tracebacks that show the cell's own lines, a fresh
stdout/stderr per cell, the per-cell CPU rlimit. Not covered: timeouts and
limits (the trusted holder enforces them; nothing here is trusted by it).

Everything here runs in forked children; every path ends in ``os._exit``.
"""

from __future__ import annotations

import _thread
import io
import json
import linecache
import os
import resource
import select
import socket
import sys
import traceback

from thor_core.sandbox.resources import reap_children
from thor_core.sandbox.wire import Channel

_TRACEBACK_FRAMES = 64


def serve_state(channel: Channel, devnull_fd: int, namespace: dict, prefault: tuple = ()) -> None:
    """Fork a spare whenever the holder asks (``{"spare": id}`` + its channel), until it closes; never returns.

    ``prefault``: compiled lines each spare runs while it waits (``SandboxConfig.prefault``).
    """
    try:
        while True:
            reap_children()  # a successful cell's killed children are our zombies until reaped
            try:
                request, fds = channel.receive()
            except EOFError:
                return
            pid = os.fork()
            if pid == 0:
                channel = _serve_as_spare(fds[0], channel, devnull_fd, namespace, prefault)
                continue  # its cell succeeded: this process is the session's state now
            os.close(fds[0])
            _, status = os.waitpid(pid, 0)  # returns only when the spare ended: its cell failed (or was one-shot)
            channel.send({"exited": request["spare"], "exit_code": os.waitstatus_to_exitcode(status)})
    finally:
        os._exit(0)


def _serve_as_spare(
    channel_fd: int, state_channel: Channel, devnull_fd: int, namespace: dict, prefault: tuple
) -> Channel:
    """In the spare: get ready, wait for one cell, run it; return the channel if this process is the new state."""
    try:
        state_channel.close()
        channel = Channel(socket.socket(fileno=channel_fd))
        streams = (_text_stream(1), _text_stream(2))
        _prime(streams)
        _prefault(prefault, channel)
        _, hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)
        threads_before = _thread._count()  # inherited, and never lowered for threads a fork left behind
        try:
            request, (stdout_fd, stderr_fd) = channel.receive()
        except EOFError:  # the holder no longer needs this spare
            os._exit(0)
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        os.close(stdout_fd)
        os.close(stderr_fd)
        sys.stdout = sys.__stdout__ = streams[0]
        sys.stderr = sys.__stderr__ = streams[1]
        resource.setrlimit(resource.RLIMIT_CPU, (min(int(request["cpu_s"]), hard_cpu), hard_cpu))
        ok = _execute(request["code"], f"<cell {request['cell']}>", namespace, streams[1])
        _flush(streams)
        if not ok:
            os._exit(1)
        if not request["keep"]:
            channel.send({"done": request["cell"], "pid": os.getpid(), "state_pid": None})
            os._exit(0)
        os.dup2(devnull_fd, 1)  # the new state holds no pipe of this cell
        os.dup2(devnull_fd, 2)
        resource.setrlimit(resource.RLIMIT_CPU, (hard_cpu, hard_cpu))
        state_pid = os.getpid()
        if _thread._count() > threads_before:  # threads the cell left running: only a fork leaves them behind
            state_pid = os.fork()
            if state_pid:
                channel.send({"done": request["cell"], "pid": os.getpid(), "state_pid": state_pid})
                os._exit(0)
            return channel
        channel.send({"done": request["cell"], "pid": state_pid, "state_pid": state_pid})
        return channel
    except BaseException:
        os._exit(1)


def _prime(streams: tuple[io.TextIOWrapper, ...]) -> None:
    """Do once, while the spare waits, what every cell does: parse a request, compile, exec, print, reply.

    The copy-on-write faults of those pages (the compiler's, the printing
    path's, JSON's) then happen now instead of while the cell runs; a cell
    would pay them anyway. Output goes to fd 1, still /dev/null here.
    """
    request = json.loads(json.dumps({"cell": 0, "code": "x = [str(i) for i in range(3)]\nprint(x, len(x))"}))
    _execute(request["code"], "<prime>", {"__name__": "__main__", "__builtins__": __builtins__}, streams[1])
    linecache.cache.pop("<prime>", None)
    _flush(streams)
    json.dumps({"done": 0, "pid": 0, "state_pid": 0}, separators=(",", ":"))


def _prefault(lines: tuple, channel: Channel) -> None:
    """Run the compiled prefault lines in a throwaway namespace until one fails or the cell has arrived.

    Each line copies the pages it writes into this process now (see
    ``SandboxConfig.prefault``); the cell waits at most for the line in progress.
    """
    scratch = {"__builtins__": __builtins__}
    for line in lines:
        if select.select([channel.fileno()], [], [], 0)[0]:
            return
        try:
            exec(line, scratch)
        except BaseException:
            return


def _execute(code: str, filename: str, namespace: dict, errors: io.TextIOWrapper) -> bool:
    """Run ``code`` in ``namespace``; True if it ran to its end.

    On any exception the traceback (without our frame) goes to ``errors``:
    the cell's stderr, even if the code replaced ``sys.stderr``.
    """
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        exec(compile(code, filename, "exec"), namespace)
        return True
    except BaseException as exc:  # SystemExit too: an exit ends the cell as a failure
        # A bounded traceback: formatting a million frames of a runaway recursion would outlast the timeout.
        traceback.print_exception(
            type(exc),
            exc,
            exc.__traceback__.tb_next if exc.__traceback__ else None,
            limit=_TRACEBACK_FRAMES,
            file=errors,
        )
        return False


def _text_stream(fd: int) -> io.TextIOWrapper:
    """Line-buffered, so what a cell printed before it was stopped still reaches the holder."""
    return io.TextIOWrapper(
        io.FileIO(fd, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )


def _flush(streams: tuple[io.TextIOWrapper, ...]) -> None:
    for stream in (*streams, sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # the code may have replaced or closed them
            pass
