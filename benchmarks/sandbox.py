"""Benchmark: the kit's sandbox against the two usual ways of running model code.

- ours: ``thor_core.sandbox`` with every layer on (network namespace too);
  each cell runs in a session (fork of the session's state).
- (a) cold: a fresh ``python -c`` subprocess per call with rlimits (the
  SandboxFusion / nanochat pattern); state is emulated by replaying earlier
  cells.
- (b) pool: a pool of warm worker processes that ``exec`` each call in a
  fresh namespace (the ToRA / Qwen2.5-Math pattern); state by replaying
  earlier cells. Workers import the same math stack once at start.

Workloads: a trivial print, ``sum(range(10**6))``, a typical sympy cell
(``solve`` of a quadratic), a heavier one (``factor`` and ``integrate``), and
a 4-cell trajectory whose cells reuse earlier variables (latency per whole
trajectory, session open and close included). Single cells run as cells of
one session (ours) or as independent calls (baselines). Reported: p50/p95
latency back to back, ours' p50 with a 20 ms untimed pause before each cell
(as while the model writes its next block: ours readies the next cell's
process then), cells (or trajectories) per second with 2 client threads
back to back, and ours' p50 speedup over each baseline (back to back); then
how fast a session serves again after a timeout and after a crash.

Run: ``.venv/bin/python benchmarks/sandbox.py`` (about 2-3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from thor_core.sandbox import Sandbox, SandboxConfig

PRELOAD = ("sympy", "numpy", "math", "fractions", "itertools", "collections")
WORKLOADS = {
    "trivial print": "print(1 + 1)",
    "sum(range(10**6))": "print(sum(range(10**6)))",
    "sympy cell (solve)": "from sympy import symbols, solve\nx = symbols('x')\nprint(solve(x**2 - 5*x + 6, x))",
    "sympy cell (factor+integrate)": "import sympy as sp\nx = sp.symbols('x')\nprint(sp.factor(x**4 - 1), sp.integrate(sp.sin(x)**2, x))",
}
THINK_S = 0.02  # an untimed pause before each cell in the second latency column, as while the model writes
TRAJECTORY = [
    "import sympy as sp\nx = sp.symbols('x')\nf = x**3 - 6*x**2 + 11*x - 6\nprint(f)",
    "roots = sp.solve(f, x)\nprint(roots)",
    "total = sum(roots)\nprint(total)",
    "print(sp.factor(f), total * 2)",
]


# ---------------------------------------------------------------- the three executors
# Each offers session() -> an object with run(code) and close(). A session of
# a baseline replays its earlier cells, the only way those executors keep state.


class Ours:
    name = "ours (fork server, all layers)"

    def __init__(self):
        self.sandbox = Sandbox(SandboxConfig(timeout_s=30.0, network_namespace=True, preload=PRELOAD))

    def session(self):
        return _Checked(self.sandbox.session())

    def close(self):
        self.sandbox.close()


class _Checked:
    def __init__(self, session):
        self.session = session

    def run(self, code: str) -> None:
        result = self.session.run(code)
        assert result.success, result

    def close(self) -> None:
        self.session.close()


def _limit_child() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (30, 30))
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class _ReplaySession:
    """State by replay: each call runs every earlier cell of the trajectory again, then the new one."""

    def __init__(self, call, replay: bool):
        self.call, self.replay, self.history = call, replay, []

    def run(self, code: str) -> None:
        self.call("\n".join(self.history + [code]))
        if self.replay:
            self.history.append(code)

    def close(self) -> None:
        pass


class Cold:
    name = "(a) python -c per call + rlimits"

    def session(self, replay: bool = True):
        return _ReplaySession(self.call, replay)

    @staticmethod
    def call(code: str) -> None:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            timeout=60,
            preexec_fn=_limit_child,
            env={"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1"},
        )
        assert done.returncode == 0, done.stderr

    def close(self):
        pass


def _pool_init() -> None:
    for name in PRELOAD:
        __import__(name)


def _pool_exec(code: str) -> tuple[bool, str]:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(code, {"__name__": "__main__"})
        return True, out.getvalue()
    except BaseException as exc:
        return False, repr(exc)


class Pool:
    name = "(b) warm process pool + replay"

    def __init__(self):
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        self.pool = ProcessPoolExecutor(2, initializer=_pool_init)
        list(self.pool.map(_pool_exec, ["print(1)"] * 4))  # workers up and warm

    def session(self, replay: bool = True):
        return _ReplaySession(self.call, replay)

    def call(self, code: str) -> None:
        ok, out = self.pool.submit(_pool_exec, code).result(timeout=60)
        assert ok, out

    def close(self):
        self.pool.shutdown()


# ---------------------------------------------------------------- measuring


def _open(executor, replay: bool):
    return executor.session() if isinstance(executor, Ours) else executor.session(replay=replay)


def latencies(executors: dict, cells: str | list[str], repeats: dict[str, int], think_s: float = 0.0) -> dict:
    """Seconds per unit for each executor, measured in turns (ours, pool, cold, ours, ...).

    Taking turns gives every executor the same share of whatever else the
    (shared) machine is doing. A unit is one cell (``cells`` a string: ours
    runs it as cells of one session, the baselines as independent calls) or
    one whole trajectory (``cells`` a list: session open and close included).
    ``think_s``: an untimed pause before each cell, as while the model writes
    its next block (ours then has the next cell's process ready).
    """
    single = isinstance(cells, str)
    sessions = {key: _open(executor, replay=False) for key, executor in executors.items()} if single else {}
    for session in sessions.values():
        session.run(cells)  # warm
    times: dict[str, list[float]] = {key: [] for key in executors}
    for turn in range(max(repeats[key] for key in executors)):
        for key, executor in executors.items():
            if turn >= repeats[key]:
                continue
            timed = 0.0
            session = sessions[key] if single else _open(executor, replay=True)
            start = time.perf_counter()
            for cell in [cells] if single else cells:
                time.sleep(think_s)
                timed -= think_s
                session.run(cell)
            if not single:
                session.close()
            times[key].append(time.perf_counter() - start + timed)
    for session in sessions.values():
        session.close()
    return times


def throughput(executor, cells: list[str] | str, units: int, threads: int = 2) -> float:
    """Units (cells, or trajectories when ``cells`` is a list) per second with ``threads`` clients."""

    def client(n: int) -> None:
        latencies({"one": executor}, cells, {"one": n})

    workers = [threading.Thread(target=client, args=(max(units // threads, 1),)) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return max(units // threads, 1) * threads / (time.perf_counter() - start)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def recovery(sandbox: Sandbox, repeats: int) -> dict[str, float]:
    """Milliseconds from a timeout's deadline (or a crash cell's start) until the next cell's result is back."""
    after_timeout, after_crash = [], []
    with sandbox.session() as session:
        session.run("x = 1")
        for _ in range(repeats):
            start = time.perf_counter()
            assert session.run("while True: pass", timeout_s=0.2).timed_out
            assert session.run("print(x)").success
            after_timeout.append(time.perf_counter() - start - 0.2)
            start = time.perf_counter()
            assert not session.run("import os\nos._exit(1)").success
            assert session.run("print(x)").success
            after_crash.append(time.perf_counter() - start)
    return {
        "after timeout": 1e3 * statistics.median(after_timeout),
        "after crash": 1e3 * statistics.median(after_crash),
    }


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    reps = {"ours": int(200 * scale), "pool": int(100 * scale), "cold": max(int(20 * scale), 4)}
    print(
        f"# sandbox benchmark, {time.strftime('%Y-%m-%d %H:%M')}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    ours, pool, cold = Ours(), Pool(), Cold()
    print("ours, isolation layers:", ", ".join(f"{k}={v}" for k, v in ours.sandbox.isolation_report().items()))
    executors = {"ours": ours, "pool": pool, "cold": cold}
    rows = []
    units = [(name, code, "cell") for name, code in WORKLOADS.items()]
    units.append(("4-cell trajectory", TRAJECTORY, "trajectory"))
    for workload, cells, unit in units:
        n = reps if unit == "cell" else {key: max(count // 4, 4) for key, count in reps.items()}
        lat = latencies(executors, cells, n)
        thinking = latencies({"ours": ours}, cells, {"ours": max(n["ours"] // 2, 4)}, think_s=THINK_S)["ours"]
        for key, executor in executors.items():
            p50 = pct(lat[key], 0.5)
            rate = throughput(executor, cells, max(n[key] // 2, 4))
            rows.append(
                (
                    workload if key == "ours" else "",
                    executor.name,
                    f"{1e3 * p50:.1f}",
                    f"{1e3 * pct(lat[key], 0.95):.1f}",
                    f"{1e3 * pct(thinking, 0.5):.1f}" if key == "ours" else "",
                    f"{rate:.1f} {unit}s/s",
                    "" if key == "ours" else f"{p50 / pct(lat['ours'], 0.5):.1f}x",
                )
            )
    back = recovery(ours.sandbox, int(20 * scale) or 3)
    pool.close()
    ours.close()

    header = (
        "workload",
        "executor",
        "p50 ms",
        "p95 ms",
        f"p50 ms, {THINK_S * 1e3:.0f} ms pauses",
        "throughput (2 threads)",
        "ours faster (p50)",
    )
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print("| ours: back to serving | ms (median) |")
    print("|---|---|")
    for name, ms in back.items():
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
