"""The sandbox: runs model-written Python fast, safely, and with state kept from cell to cell.

Example::

    from thor_core.sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(timeout_s=10.0)) as sb:
        sb.health_check()                  # SandboxUnavailable says what is wrong
        sb.isolation_report()              # layer -> "active" | "missing: <why>"
        sb.run("print(1 + 1)")             # one-shot, stateless -> ExecResult
        with sb.session() as s:            # one trajectory
            s.run("x = 2")
            s.run("print(x * 3)", timeout_s=5).observation   # '6'
        sb.run_batch([(None, "print(1)"), (s2, "print(y)")])  # concurrent, order kept

Modules: ``config`` (SandboxConfig, ExecResult, errors), ``executor`` (the
caller's side), ``forkserver`` (the trusted template and session holders),
``cell`` (what runs inside), ``isolation`` (the layers), ``wire`` (JSON
messages), ``server`` and ``client`` (HTTP front, SandboxFusion-compatible,
and ``RemoteSandbox``, with failover between hosts), ``hosts``
(``open_sandbox``: the local sandbox or the hosts of ``sandbox_urls``, what
the stages use). Design, layers and degraded modes: docs/sandbox.md.
"""

from thor_core.sandbox.client import RemoteSandbox, RemoteSession
from thor_core.sandbox.config import LAYERS, ExecResult, SandboxConfig, SandboxError, SandboxUnavailable
from thor_core.sandbox.executor import Sandbox, Session
from thor_core.sandbox.hosts import SANDBOX_URL_HELP, check_urls, open_sandbox

__all__ = [
    "LAYERS",
    "ExecResult",
    "SANDBOX_URL_HELP",
    "RemoteSandbox",
    "RemoteSession",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "SandboxUnavailable",
    "Session",
    "check_urls",
    "open_sandbox",
]
