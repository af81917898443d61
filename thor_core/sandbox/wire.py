"""Messages between the sandbox's processes: one JSON object per line.

Covered: a ``Channel`` over a Unix stream socket that sends a message with
file descriptors attached (SCM_RIGHTS), receives with a deadline (between
trusted processes), and parses whatever has arrived without ever blocking
(the holder reading what sandboxed processes send: ``read_available`` takes no
file descriptors and caps the size of a message).

Not covered: pickle, which is never used: a sandboxed process must not be able
to make a trusted one run code by what it sends. File descriptors that arrive
belong to the next complete message; every exchange that passes descriptors
sends one message and waits for its answer, so there is no ambiguity.
"""

from __future__ import annotations

import array
import json
import os
import socket
import time

_MAX_FDS = 8


class ProtocolError(RuntimeError):
    """The peer sent something that is not a message (or one too large)."""


class Channel:
    """JSON lines over a connected ``AF_UNIX`` stream socket."""

    def __init__(self, sock: socket.socket, max_message_bytes: int = 1 << 30):
        self.sock = sock
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self._fds: list[int] = []
        self._messages: list[dict] = []

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return cls(a), cls(b)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self.sock.close()

    def send(self, message: dict, fds: tuple[int, ...] | list[int] = (), timeout: float | None = None) -> None:
        """Send one message (and ``fds``); raises TimeoutError when the peer does not take it within ``timeout``."""
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        self.sock.settimeout(timeout)
        if fds:
            sent = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            data = data[sent:]
        if data:
            self.sock.sendall(data)

    def receive(self, timeout: float | None = None) -> tuple[dict, list[int]]:
        """The next message and the descriptors that came with it; blocks up to ``timeout`` seconds.

        Raises EOFError when the peer closed, TimeoutError when nothing complete came in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._messages:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no message in time")
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            try:
                self._read_once(with_fds=True)
            except TimeoutError:
                raise TimeoutError("no message in time") from None
        fds, self._fds = self._fds, []
        return self._messages.pop(0), fds

    def read_available(self) -> list[dict]:
        """Every complete message that has arrived, without blocking; EOFError once the peer closed.

        Takes no file descriptors (the kernel closes any that were sent) and
        raises ProtocolError for a line over ``max_message_bytes``.
        """
        self.sock.setblocking(False)
        try:
            while True:
                self._read_once(with_fds=False)
        except BlockingIOError:
            pass
        except EOFError:
            if not self._messages:
                raise
        messages, self._messages = self._messages, []
        return messages

    def _read_once(self, with_fds: bool) -> None:
        if with_fds:
            data, ancillary, _flags, _addr = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(_MAX_FDS * 4))
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    self._fds.extend(fds)
        else:
            data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError("peer closed the channel")
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._messages.append(self._decode(line))
        if len(self._buffer) > self.max_message_bytes:
            raise ProtocolError(f"message over {self.max_message_bytes} bytes")

    def _decode(self, line: bytes) -> dict:
        if len(line) > self.max_message_bytes:
            raise ProtocolError(f"message over {self.max_message_bytes} bytes")
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise ProtocolError(f"not JSON: {line[:80]!r}") from exc
        if not isinstance(message, dict):
            raise ProtocolError(f"not a JSON object: {line[:80]!r}")
        return message
