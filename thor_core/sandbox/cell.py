"""What runs inside the sandbox: a session's state process and the cells forked from it.

The state process holds the session's Python state (its namespace) and does
nothing but wait for a cell. For each cell it forks; the child runs the code
with stdout/stderr on pipes the holder reads, then either

- fails (exception, ``sys.exit``, crash, or is killed by the holder): the
  child is gone, the state process reaps it, reports its exit status, and
  serves the next cell with the state it had before: that is the rollback;
- succeeds: the child becomes the session's new state process (the holder
  kills the old one). If the cell left threads running (started with
  ``threading``/``_thread``; threads a C extension starts on its own are not
  seen), the child forks once more so the new state has only the main
  thread, and exits.

Covered: the loop above, tracebacks that show the cell's own lines, a fresh
stdout/stderr per cell, the per-cell CPU rlimit. Not covered: timeouts and
limits (the trusted holder enforces them; nothing here is trusted by it).

Everything here runs in forked children; every path ends in ``os._exit``.
"""

from __future__ import annotations

import io
import linecache
import os
import resource
import socket
import sys
import traceback
import _thread

from thor_core.sandbox.wire import Channel

_TRACEBACK_FRAMES = 64


def serve_state(channel: Channel, devnull_fd: int, namespace: dict) -> None:
    """Serve cells until the holder closes the channel; never returns."""
    try:
        while True:
            _reap_finished_children()
            try:
                request, fds = channel.receive()
            except EOFError:
                return
            pid = os.fork()
            if pid == 0:
                channel = _run_cell(request, fds, channel, devnull_fd, namespace)
                continue  # the cell succeeded: this process is the session's state now
            for fd in fds:
                os.close(fd)
            _, status = os.waitpid(pid, 0)  # returns only if the cell ended: it failed
            channel.send({"exited": request["cell"], "exit_code": os.waitstatus_to_exitcode(status)})
    finally:
        os._exit(0)


def _reap_finished_children() -> None:
    """A successful cell's killed children are this process's zombies until reaped."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _run_cell(request: dict, fds: list[int], old_channel: Channel, devnull_fd: int, namespace: dict) -> Channel:
    """In the forked child: run the cell; return the new channel if this process is to become the state."""
    try:
        old_channel.close()
        stdout_fd, stderr_fd, channel_fd = fds
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        os.close(stdout_fd)
        os.close(stderr_fd)
        streams = (_text_stream(1), _text_stream(2))
        sys.stdout = sys.__stdout__ = streams[0]
        sys.stderr = sys.__stderr__ = streams[1]
        channel = Channel(socket.socket(fileno=channel_fd))
        _, hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (min(int(request["cpu_s"]), hard_cpu), hard_cpu))
        threads_before = _thread._count()  # inherited, and never lowered for threads a fork left behind
        ok = _execute(request["code"], f"<cell {request['cell']}>", namespace)
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


def _execute(code: str, filename: str, namespace: dict) -> bool:
    """Run ``code`` in ``namespace``; print the traceback (without our frame) and return False on any exception."""
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        exec(compile(code, filename, "exec"), namespace)
        return True
    except BaseException as exc:  # SystemExit too: an exit ends the cell as a failure
        # A bounded traceback: formatting a million frames of a runaway recursion would outlast the timeout.
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None, limit=_TRACEBACK_FRAMES)
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
