"""Benchmark: the kit's sandbox against the two usual ways of running model code.

- ours: ``thor_core.sandbox`` with every layer on (network namespace too);
  each cell runs in a session (fork of the session's state). "ours, prefault
  off" is the same with ``SandboxConfig(prefault="")``: the spare does not
  run the prefault lines while it waits, so the cost of copy-on-write faults
  shows.
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
one session (ours) or as independent calls (baselines); every executor runs
each workload once before timing. Each measurement runs in ``--blocks``
blocks (default 3); within a block the executors take turns, the order
reversed every turn. Reported: the median over blocks of the p50 latency
back to back and its spread (min-max over blocks), p95, ours' p50 with 20 ms
and 200 ms untimed pauses before each cell (as while the model writes its
next block: ours readies the next cell's process then), cells (or
trajectories) per second with 2 client threads back to back, ours' p50
speedup over each baseline; then how fast a session serves again after a
timeout and after a crash, and the private memory a session holds. The load
average is printed with the tables.

Run: ``.venv/bin/python benchmarks/sandbox.py`` (about 4-5 minutes on 2 quiet cores).
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
THINK_S = (0.02, 0.2)  # untimed pauses before each cell (the pause columns), as while the model writes its next block
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

    def __init__(self, **options):
        self.sandbox = Sandbox(SandboxConfig(timeout_s=30.0, network_namespace=True, preload=PRELOAD, **options))

    def session(self):
        return _Checked(self.sandbox.session())

    def close(self):
        self.sandbox.close()


class OursNoPrefault(Ours):
    name = "ours, prefault off"

    def __init__(self):
        super().__init__(prefault="")


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
    """Seconds per unit for each executor, measured in turns, the order reversed every turn.

    Taking turns (ours, pool, cold, cold, pool, ours, ...) gives every
    executor the same share of whatever else the (shared) machine is doing. A unit is one cell (``cells`` a string: ours
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
        for key, executor in list(executors.items())[:: 1 if turn % 2 == 0 else -1]:
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


def _private_kib(pid: int, holder: int) -> int:
    """Private memory (KiB) of ``pid`` and its descendants, the holder itself excluded."""
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
        own = 0
        if pid != holder:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                own = sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean", "Private_Dirty")))
    except OSError:  # a process that just exited
        return 0
    return own + sum(_private_kib(int(child), holder) for child in children)


def session_memory(executor: Ours, repeats: int = 5) -> float:
    """Median private MiB of one session's sandboxed processes (state + ready spare) after a sympy cell."""
    values = []
    for _ in range(repeats):
        with executor.sandbox.session() as session:
            for cell in TRAJECTORY:
                session.run(cell)
            time.sleep(0.5)  # the spare is forked and done preparing
            values.append(_private_kib(session.info["pid"], session.info["pid"]) / 1024)
    return statistics.median(values)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--blocks", type=int, default=3, help="repetitions of each measurement (median, spread)")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    reps = {"ours": int(100 * scale), "nopf": int(100 * scale), "pool": int(50 * scale), "cold": max(int(8 * scale), 3)}
    print(
        f"# sandbox benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {_load()}"
    )
    ours, nopf, pool, cold = Ours(), OursNoPrefault(), Pool(), Cold()
    print("ours, isolation layers:", ", ".join(f"{k}={v}" for k, v in ours.sandbox.isolation_report().items()))
    executors = {"ours": ours, "nopf": nopf, "pool": pool, "cold": cold}
    rows, ratios = [], []
    units = [(name, code, "cell") for name, code in WORKLOADS.items()]
    units.append(("4-cell trajectory", TRAJECTORY, "trajectory"))
    for workload, cells, unit in units:
        n = reps if unit == "cell" else {key: max(count // 4, 3) for key, count in reps.items()}
        p50s = {key: [] for key in executors}
        p95s = {key: [] for key in executors}
        paused = {(key, think): [] for key in ("ours", "nopf") for think in THINK_S}
        for _ in range(args.blocks):  # each block: every executor, alternating order, then the pauses
            lat = latencies(executors, cells, n)
            for key in executors:
                p50s[key].append(pct(lat[key], 0.5))
                p95s[key].append(pct(lat[key], 0.95))
            for think in THINK_S:
                k = max(n["ours"] // (2 if think < 0.1 else 5), 3)
                both = latencies({"ours": ours, "nopf": nopf}, cells, {"ours": k, "nopf": k}, think_s=think)
                for key in ("ours", "nopf"):
                    paused[key, think].append(pct(both[key], 0.5))
        med = {key: statistics.median(v) for key, v in p50s.items()}
        for key, executor in executors.items():
            rate = throughput(executor, cells, max(n[key] // 2, 3))
            spread = f"{1e3 * min(p50s[key]):.1f}-{1e3 * max(p50s[key]):.1f}"
            pauses = [
                f"{1e3 * statistics.median(paused[key, t]):.1f}" if key in ("ours", "nopf") else "" for t in THINK_S
            ]
            rows.append(
                (
                    workload if key == "ours" else "",
                    executor.name,
                    f"{1e3 * med[key]:.1f}",
                    spread,
                    f"{1e3 * statistics.median(p95s[key]):.1f}",
                    *pauses,
                    f"{rate:.1f} {unit}s/s",
                    "" if key == "ours" else f"{med[key] / med['ours']:.1f}x",
                )
            )
        paused_ours = {t: statistics.median(paused["ours", t]) for t in THINK_S}
        ratios.append(
            (workload, med["cold"] / med["ours"], *(med["cold"] / paused_ours[t] for t in THINK_S))
        )  # fmt: skip
    back = recovery(ours.sandbox, int(20 * scale) or 3)
    memory = {name: session_memory(executor) for name, executor in (("ours", ours), ("prefault off", nopf))}
    pool.close()
    ours.close()
    nopf.close()

    header = (
        "workload",
        "executor",
        "p50 ms (median of blocks)",
        "p50 spread",
        "p95 ms",
        *(f"p50 ms, {t * 1e3:.0f} ms pauses" for t in THINK_S),
        "throughput (2 threads)",
        "ours faster (p50)",
    )
    print(f"\n{args.blocks} blocks per measurement; ended {time.strftime('%Y-%m-%d %H:%M %Z')}, load average {_load()}")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print("| ours vs (a) cold | back to back | " + " | ".join(f"{t * 1e3:.0f} ms pauses" for t in THINK_S) + " |")
    print("|---|---|" + "---|" * len(THINK_S))
    for workload, *values in ratios:
        print(f"| {workload} | " + " | ".join(f"{v:.1f}x" for v in values) + " |")
    print()
    print("| ours: back to serving | ms (median) |")
    print("|---|---|")
    for name, ms in back.items():
        print(f"| {name} | {ms:.1f} |")
    print()
    print("| private memory per session (state + spare, after the 4-cell trajectory) | MiB (median of 5) |")
    print("|---|---|")
    for name, mib in memory.items():
        print(f"| {name} | {mib:.1f} |")


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
