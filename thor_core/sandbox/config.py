"""The sandbox's settings, its result type and its errors.

Covered: ``SandboxConfig`` (every knob, with help text in the field metadata
and a JSON round trip so the template process gets the same settings),
``ExecResult`` (one cell's outcome; success and observation follow the kit's
rule in ``thor_core.tir``), the names of the isolation layers, and the two
errors callers see.

Not covered: running anything (``executor``), the layers themselves
(``isolation``).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any

from thor_core import tir

# Every isolation layer, in the order the report lists them.
LAYERS = (
    "cgroup_pids",  # a pids cgroup per session: fork bombs stop at max_processes
    "cgroup_memory",  # a memory cgroup per session: state + cell + children + work dir files
    "rlimits",  # address space, CPU, file size, open files, no core files, process count
    "unprivileged",  # a per-session non-root uid, no capabilities, no_new_privs
    "landlock_fs",  # read-only interpreter and libraries, read-write only in the work dir
    "landlock_tcp",  # no TCP bind or connect
    "landlock_signals",  # signals and abstract Unix sockets scoped to the session
    "seccomp",  # no sockets (any family), no signals to other processes, no ptrace, no namespaces
    "private_tmpfs",  # the work dir is a private tmpfs of disk_mb, in a mount namespace hiding /root
    "network_namespace",  # optional: an empty network namespace
    "clean_env",  # only the variables the sandbox sets itself
)


# Run once by the template after the preload, in a throwaway namespace: the
# lazy imports and caches these calls fill are inherited by every session, so
# a trajectory's first sympy cell costs milliseconds, not hundreds of them.
DEFAULT_WARMUP = """
import sys
if "sympy" in sys.modules:
    import sympy as sp
    x, y, n = sp.symbols("x y n")
    sp.solve(x**2 - 5*x + 6, x); sp.solve([x + y - 3, x - y - 1], [x, y]); sp.solveset(x**2 - 4, x, sp.S.Reals)
    sp.factor(x**4 - 1); sp.expand((x + 1)**5); sp.simplify(sp.sin(x)**2 + sp.cos(x)**2); sp.cancel((x**2 - 1) / (x - 1))
    sp.integrate(sp.sin(x)**2, x); sp.integrate(x**2, (x, 0, 1)); sp.diff(sp.exp(x) * x, x); sp.limit(sp.sin(x) / x, x, 0)
    sp.summation(n**2, (n, 1, 10)); sp.series(sp.exp(x), x, 0, 4); sp.Matrix([[1, 2], [3, 4]]).det()
    sp.Rational(1, 3) + sp.Rational(1, 6); sp.nsimplify(0.5); sp.isprime(97); sp.factorint(360); sp.divisors(36)
    sp.binomial(10, 3); sp.N(sp.pi, 30); sp.sqrt(8); str(sp.latex(x**2 / 3)); str(sp.solve(x**3 - 6*x**2 + 11*x - 6, x))
if "numpy" in sys.modules:
    import numpy as np
    np.linalg.solve(np.eye(2), np.ones(2)); np.random.default_rng(0).random(3); np.arange(10).sum(); np.roots([1, -3, 2])
"""

# Run by every spare (a session's next-cell process) while it waits for its
# cell, one line at a time, stopping at the first line that fails or as soon
# as the cell arrives. A spare is a copy-on-write fork of the session state:
# the first write to each inherited page copies it, and a warm sympy call
# writes over a thousand of them (reference counts, caches; the numbers:
# docs/BENCHMARKS.md, "Sandbox"). Running such
# calls ahead copies those pages while the model is still writing, so the
# cell itself mostly finds them private. The expressions differ from the
# warm-up's on purpose: the pages are sympy's, not one expression's.
DEFAULT_PREFAULT = """
sp = __import__("sys").modules["sympy"]; x, y = sp.symbols("x y")
sp.solve(x**2 - 3*x + 2, x)
sp.factor(x**3 - x); sp.expand((x + 2)**4)
sp.solve([2*x + y - 5, x - y + 2], [x, y])
sp.integrate(x**3 + 2*x, x); sp.diff(sp.sin(x) * x**2, x); sp.Rational(2, 7) * 3; str(sp.sqrt(12))
sp.simplify((x**2 - 4) / (x + 2))
"""


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run code (or cannot run it as safely as required); the message says what to do."""


class SandboxError(RuntimeError):
    """A sandbox process broke its protocol or died; the session that raised it is closed."""


@dataclass(frozen=True)
class SandboxConfig:
    """Settings of a ``Sandbox`` (and of the sandbox server)."""

    timeout_s: float = field(default=10.0, metadata={"help": "wall-clock limit of one cell (a call may pass its own)"})
    memory_mb: int = field(
        default=1024,
        metadata={
            "help": "memory of one session (state, cell, its children and work dir files); "
            "each process may also map at most the template's size plus this"
        },
    )
    max_processes: int = field(
        default=64, metadata={"help": "tasks (processes and threads) one session may hold at once"}
    )
    disk_mb: int = field(default=64, metadata={"help": "size of the session's private work dir, and of any one file"})
    max_open_files: int = field(default=256, metadata={"help": "open file descriptors per sandboxed process"})
    max_output_bytes: int = field(
        default=65536, metadata={"help": "stdout and stderr kept per cell, each (head and tail when longer)"}
    )
    output_limit_bytes: int = field(
        default=8 << 20, metadata={"help": "a cell that writes more than this to stdout+stderr is stopped"}
    )
    preload: tuple[str, ...] = field(
        default=("sympy", "numpy", "math", "fractions", "itertools", "collections"),
        metadata={"help": "modules the template imports once; every session starts with them imported"},
    )
    warmup: str = field(
        default=DEFAULT_WARMUP,
        metadata={"help": "trusted code the template runs once after the preload; sessions inherit what it warmed"},
    )
    prefault: str = field(
        default=DEFAULT_PREFAULT,
        metadata={
            "help": "code each session's spare process runs while it waits for the next cell (line by line, "
            "until the cell arrives), so the cell skips most copy-on-write faults; costs a few MB per session; "
            "'' = off"
        },
    )
    observation: tir.ObservationFormat = field(
        default_factory=tir.ObservationFormat, metadata={"help": "how a result becomes the model's observation"}
    )
    strict: bool = field(
        default=False, metadata={"help": "refuse to start (SandboxUnavailable) when a required layer is missing"}
    )
    required_layers: tuple[str, ...] | None = field(
        default=None, metadata={"help": "layers strict mode requires; None = every layer not switched off here"}
    )
    network_namespace: bool = field(
        default=False, metadata={"help": "give each session an empty network namespace (about 0.5 ms per session)"}
    )
    disable_layers: tuple[str, ...] = field(
        default=(), metadata={"help": "layers to switch off (debugging, or tests of degraded machines)"}
    )
    work_root: str | None = field(
        default=None, metadata={"help": "where session work dirs are made; None = the temp dir"}
    )
    uid_base: int = field(
        default=1_000_000, metadata={"help": "sessions run as uid/gid uid_base + a per-session number (when root)"}
    )
    env: dict[str, str] = field(default_factory=dict, metadata={"help": "extra environment variables for the code"})
    python: str = field(default=sys.executable, metadata={"help": "interpreter of the template process"})
    max_workers: int = field(default=16, metadata={"help": "threads run_batch uses (one cell per thread at a time)"})

    def __post_init__(self) -> None:
        unknown = set(self.disable_layers) | set(self.required_layers or ())
        unknown -= set(LAYERS)
        if unknown:
            raise ValueError(f"SandboxConfig: unknown layer names {sorted(unknown)}; known: {list(LAYERS)}")
        if self.timeout_s <= 0 or self.memory_mb < 64 or self.max_processes < 4 or self.disk_mb < 1:
            raise ValueError(
                "SandboxConfig: need timeout_s > 0, memory_mb >= 64, max_processes >= 4, disk_mb >= 1; got "
                f"{self.timeout_s}, {self.memory_mb}, {self.max_processes}, {self.disk_mb}"
            )

    def enabled_layers(self) -> tuple[str, ...]:
        """The layers this config asks for (all but the disabled ones and an unrequested network namespace)."""
        off = set(self.disable_layers) | (set() if self.network_namespace else {"network_namespace"})
        return tuple(layer for layer in LAYERS if layer not in off)

    def layers_required(self) -> tuple[str, ...]:
        """The layers strict mode insists on."""
        return tuple(self.required_layers) if self.required_layers is not None else self.enabled_layers()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxConfig:
        data = dict(data)
        data["observation"] = tir.ObservationFormat(**data.get("observation", {}))
        for name in ("preload", "disable_layers"):
            data[name] = tuple(data.get(name, ()))
        if data.get("required_layers") is not None:
            data["required_layers"] = tuple(data["required_layers"])
        return cls(**data)


@dataclass
class ExecResult:
    """What one cell did.

    ``exited_cleanly``: the code ran to its end without an exception, an exit
    (``sys.exit`` and ``os._exit`` count as failures: they end the cell's
    process), a crash or a limit. ``success``: the kit's rule, clean exit and
    something printed (``tir.is_success``). ``stdout``/``stderr`` keep at most
    ``max_output_bytes`` each (head and tail); the trusted side appends one
    line to ``stderr`` when it stopped the cell, so the observation names the
    cause. ``killed``: the trusted side stopped the cell (timeout, memory,
    output flood). ``oom``: the cell ran out of memory (MemoryError under the
    address-space limit, or the session's memory cgroup filled).
    """

    success: bool
    exited_cleanly: bool
    stdout: str
    stderr: str
    observation: str
    timed_out: bool = False
    killed: bool = False
    oom: bool = False
    duration_s: float = 0.0

    @classmethod
    def from_outcome(cls, outcome: dict[str, Any], fmt: tir.ObservationFormat) -> ExecResult:
        """Build the result from a holder's JSON outcome, applying the kit's success and observation rules."""
        clean, stdout, stderr = bool(outcome["exited_cleanly"]), str(outcome["stdout"]), str(outcome["stderr"])
        return cls(
            success=tir.is_success(clean, stdout, fmt),
            exited_cleanly=clean,
            stdout=stdout,
            stderr=stderr,
            observation=tir.format_observation(clean, stdout, stderr, fmt),
            timed_out=bool(outcome.get("timed_out", False)),
            killed=bool(outcome.get("killed", False)),
            oom=bool(outcome.get("oom", False)),
            duration_s=float(outcome.get("duration_s", 0.0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
