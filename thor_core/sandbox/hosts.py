"""Which sandbox a stage runs code in: the local one, or sandbox hosts (``sandbox_urls``), built in one place.

Covered: ``check_urls`` (the form of ``sandbox_urls``: http(s)://HOST:PORT, no
path, no repeats; a ValueError names the bad entry), ``open_sandbox`` (the
context manager notebooks 01, 03 and 04, their CLIs and ``thor_core.runs``
get their sandbox from: ``Sandbox(cfg)`` when no URL is given, else a
``RemoteSandbox`` over the hosts with the bearer token from
``THOR_SANDBOX_TOKEN``, health-checked at once so an unreachable host stops
the run before any work, with a message naming it and how to start it), and
the record of which hosts ran the code: ``<record_dir>/sandbox.json``, one
entry per time the stage opened its sandbox (a resumed run adds one): the
hosts, their merged isolation report, and at the end the hosts that went down
and the sessions that failed over (``RemoteSandbox.down`` and ``moved``).

Not covered: failover itself (``client``), serving (``server``).
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from thor_core.files import write_json_atomic
from thor_core.sandbox.client import RemoteSandbox
from thor_core.sandbox.config import SandboxConfig
from thor_core.sandbox.executor import Sandbox

RECORD = "sandbox.json"
SANDBOX_URL_HELP = "a sandbox host, http://HOST:PORT (repeat for several; none: this machine's sandbox)"
TOKEN_ENV = "THOR_SANDBOX_TOKEN"


def check_urls(urls: Sequence[str] | None) -> list[str]:
    """``urls`` without trailing slashes; ValueError naming each entry that is not http(s)://HOST:PORT."""
    if urls is None:
        return []
    if isinstance(urls, str):
        raise ValueError(f"sandbox_urls: expected a list of URLs, got the string {urls!r} (write [{urls!r}])")
    bad, clean = [], []
    for url in urls:
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        try:
            port = parts.port if parts else None
        except ValueError:
            port = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            bad.append(f"{url!r} is not http://HOST:PORT")
        elif parts.path.strip("/") or parts.query or parts.fragment:
            bad.append(f"{url!r} has a path or query: give the server's root, http://HOST:PORT")
        elif url.rstrip("/") in clean:
            bad.append(f"{url!r} is listed twice")
        else:
            clean.append(url.rstrip("/"))
    if bad:
        raise ValueError(
            "sandbox_urls: " + "; ".join(bad) + " (each host runs `python -m thor_core.sandbox.server --host 0.0.0.0 "
            "--port PORT`; an empty list or null runs the code on this machine)"
        )
    return clean


@contextmanager
def open_sandbox(
    urls: Sequence[str] | None = None, record_dir: str | os.PathLike | None = None, cfg: SandboxConfig | None = None
) -> Iterator[Sandbox | RemoteSandbox]:
    """The stage's sandbox: local without ``urls``, else the hosts (health-checked now; SandboxUnavailable names an
    unhealthy one). ``record_dir``: where ``sandbox.json`` records the hosts (None: not recorded)."""
    hosts = check_urls(urls)
    cfg = cfg or SandboxConfig()
    sandbox = RemoteSandbox(hosts, token=os.environ.get(TOKEN_ENV), cfg=cfg) if hosts else Sandbox(cfg)
    with sandbox:
        entry: dict[str, Any] = {"opened_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hosts": hosts or ["local"]}
        if hosts:
            entry["isolation"] = sandbox.health_check()
        _record(record_dir, entry, new=True)
        try:
            yield sandbox
        finally:
            if hosts:
                entry["down"] = dict(sandbox.down)
                entry["sessions_moved"] = [{"from": a, "to": b, "sessions": n} for (a, b), n in sandbox.moved.items()]
            entry["closed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            _record(record_dir, entry, new=False)


def _record(record_dir: str | os.PathLike | None, entry: dict[str, Any], new: bool) -> None:
    """Append ``entry`` to (or, ``new`` False, replace the last entry of) ``<record_dir>/sandbox.json``."""
    if record_dir is None:
        return
    path = Path(record_dir) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = json.loads(path.read_text())["opened"] if path.exists() else []
    entries = entries + [entry] if new else entries[:-1] + [entry]
    write_json_atomic(path, {"opened": entries})
