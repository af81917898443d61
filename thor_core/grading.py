"""Answer equivalence (the 0/1 reward), with a wall-clock limit that works anywhere.

Covered:

- ``check_equivalence(gold, pred)``: math-verify's judgement on two answer
  strings (bare LaTeX such as ``\\frac{1}{2}``, ``(1,2)``, ``[0, \\infty)``,
  ``10\\%``, ``1,000``; ``$...$`` and ``\\boxed{}`` wrappers are accepted). It
  has NO time limit of its own: math-verify's signal-based timeouts are passed
  as disabled, because ``signal.alarm`` fails off the main thread.
- ``Grader``: a small pool of worker processes (``spawn`` by default, never
  ``fork`` from a threaded parent) that run ``check_equivalence``. The parent
  waits for each job with a deadline; on overrun it kills that worker, starts a
  replacement, and returns a not-equivalent result flagged ``timed_out``. Safe
  to call from many threads and from inside other worker processes.
- ``grade_completion`` (the LAST ``\\boxed{}`` of a completion counts, via
  ``thor_core.tir.last_boxed``; no box means incorrect), ``grade_trajectories``
  (fills ``final_answer`` / ``correct`` on ``Trajectory`` records) and
  ``answers_equivalent``, all on a lazily created shared ``Grader``.

Not covered: extracting answers from code outputs or "Answer:" lines (only the
boxed answer counts, as in the paper), multiple-choice letter mapping beyond
what math-verify does, and code problems (HumanEval needs a sandbox).

Known math-verify 0.9 behaviours this module keeps (see tests/test_grading.py):
percentages are lenient (``10\\%`` matches both ``10`` and ``0.1``, and ``5``
matches ``5\\%``); ``(1,2)`` parses as an open interval, so it also matches
the set ``\\{1,2\\}``; floats must agree to 6 decimals (``0.333`` is not
``1/3``).

Scripts that grade must start from an ``if __name__ == "__main__":`` block:
``spawn`` workers re-import the main module.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from thor_core.tir import last_boxed

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_STARTUP_TIMEOUT_S = 120.0
DEFAULT_MEMORY_LIMIT_MB = 4096

_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\[", "\\]"), ("\\(", "\\)"))


@dataclass(frozen=True)
class GradeResult:
    """One graded answer.

    ``answer`` is the prediction that was compared (None when there was none,
    e.g. no ``\\boxed{}``); ``timed_out`` means the check overran its limit and
    its worker was killed (``correct`` is then False); ``error`` names a worker
    failure (crash, memory limit) that also counts as not equivalent.
    """

    answer: str | None
    correct: bool
    timed_out: bool = False
    error: str | None = None


class GraderError(RuntimeError):
    """The grading pool itself is broken (a worker cannot start, or the pool is closed)."""


def normalize_answer(answer: str) -> str:
    """The answer as math-verify should see it: ``$\\boxed{...}$`` around the bare LaTeX.

    Strips ``$..$`` / ``\\[..\\]`` / ``\\(..\\)`` wrappers; if the text contains
    boxes, the last non-empty one is the answer. Returns "" for an empty answer.
    """
    text = answer.strip()
    if "\\boxed" in text or "\\fbox" in text:
        text = last_boxed(text) or ""
    for left, right in _WRAPPERS:
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            text = text[len(left) : -len(right)].strip()
            break
    return f"$\\boxed{{{text}}}$" if text else ""


def check_equivalence(gold: str, pred: str) -> bool:
    """Whether math-verify judges ``pred`` equal to ``gold`` (both answer strings).

    No time limit: sympy can hang on inputs such as ``99999999999!``, so call
    this through a ``Grader`` (or ``answers_equivalent``), not directly.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold_text, pred_text = normalize_answer(gold), normalize_answer(pred)
    if not gold_text or not pred_text:
        return False
    config = (LatexExtractionConfig(), ExprExtractionConfig())
    gold_parsed = parse(gold_text, extraction_config=config, parsing_timeout=None)
    pred_parsed = parse(pred_text, extraction_config=config, parsing_timeout=None)
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


# ------------------------------------------------------------------ workers


def _worker_main(conn, job: Callable[[str, str], bool], memory_limit_mb: int | None) -> None:
    """Worker process loop: receive (gold, pred), reply (equivalent, error-or-None)."""
    # Ctrl-C (or a notebook kernel shutting down) is the parent's to handle: it kills us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_limit_mb:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    # math-verify warns once per process that its own timeout is disabled: we enforce it from the parent.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    job("1", "1")  # import sympy/math-verify now, so the first job's deadline is not spent importing
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent went away
            return
        if message is None:
            return
        gold, pred = message
        try:
            reply = (bool(job(gold, pred)), None)
        except MemoryError:
            reply = (False, f"MemoryError: the check exceeded the worker memory limit ({memory_limit_mb} MiB)")
        except Exception as e:  # noqa: BLE001 - any failure of one check is a not-equivalent result
            reply = (False, f"{type(e).__name__}: {e}")
        conn.send(reply)


class _Worker:
    """One worker process and the parent's end of its pipe (used by one thread at a time)."""

    def __init__(self, ctx, job, memory_limit_mb: int | None) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_worker_main, args=(child_conn, job, memory_limit_mb), name="thor-grader", daemon=True
        )
        self.process.start()
        child_conn.close()
        self.ready = False

    def wait_ready(self, timeout_s: float) -> None:
        if self.ready:
            return
        try:
            if not self.conn.poll(timeout_s):
                raise GraderError(
                    f"a grading worker did not start within {timeout_s:.0f} s; the machine may be overloaded "
                    "(raise startup_timeout_s) or importing math-verify hangs"
                )
            self.conn.recv()
        except (EOFError, OSError) as e:
            self.process.join(5)
            raise GraderError(
                f"a grading worker died while starting (exit code {self.process.exitcode}); check that "
                "math-verify imports in a fresh interpreter, and that the main script is guarded by "
                "`if __name__ == '__main__':` (spawned workers re-import it)"
            ) from e
        self.ready = True

    def run(self, gold: str, pred: str, timeout_s: float) -> tuple[bool, str | None] | None:
        """(equivalent, error) from the worker, or None if it overran ``timeout_s``."""
        self.conn.send((gold, pred))
        if not self.conn.poll(timeout_s):
            return None
        return self.conn.recv()

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(1)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class Grader:
    """A pool of ``workers`` processes that run equivalence checks under a wall-clock limit.

    Thread-safe: each call takes an idle worker for the duration of one check
    (blocking while all are busy). A check that overruns ``timeout_s`` gets its
    worker killed and replaced, and returns ``GradeResult(correct=False,
    timed_out=True)``. Use as a context manager, or call ``close()``.
    """

    # The function the workers run. Tests substitute it in a subclass; it must be importable by name.
    _job: Callable[[str, str], bool] = staticmethod(check_equivalence)

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        start_method: str = "spawn",
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB,
    ) -> None:
        if workers < 1:
            raise ValueError(f"Grader needs at least one worker, got workers={workers}")
        if timeout_s <= 0:
            raise ValueError(f"Grader timeout_s must be positive, got {timeout_s}")
        if start_method == "fork":
            raise ValueError(
                "Grader does not use 'fork': forking a threaded parent can deadlock the child; "
                "use start_method='spawn' (default) or 'forkserver'"
            )
        self.workers = workers
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self._ctx = multiprocessing.get_context(start_method)
        self._pid = os.getpid()  # the pipes belong to this process: a forked copy must not use them
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._stats = {"checks": 0, "timeouts": 0, "errors": 0, "replaced": 0}
        for _ in range(workers):
            self._idle.put(self._new_worker())

    def _new_worker(self) -> _Worker:
        return _Worker(self._ctx, type(self)._job, self.memory_limit_mb)

    # -- grading -----------------------------------------------------------
    def grade(self, gold: str, pred: str | None, timeout_s: float | None = None) -> GradeResult:
        """Compare one prediction (an answer string; None or "" is incorrect) with ``gold``."""
        if not isinstance(gold, str) or not gold.strip():
            raise ValueError(f"gold answer must be a non-empty string, got {gold!r}; fix the dataset row")
        if pred is None or not pred.strip():
            return GradeResult(answer=None, correct=False)
        limit = self.timeout_s if timeout_s is None else timeout_s
        worker = self._take()
        replace = False
        try:
            worker.wait_ready(self.startup_timeout_s)
            try:
                reply = worker.run(gold, pred, limit)
            except (EOFError, OSError):  # the worker died mid-check (killed by the OS, crashed)
                replace = True
                self._count("errors")
                return GradeResult(pred, False, error=f"grading worker died (exit code {worker.process.exitcode})")
            if reply is None:
                replace = True
                self._count("timeouts")
                return GradeResult(pred, False, timed_out=True)
            correct, error = reply
            if error:
                self._count("errors")
            return GradeResult(pred, correct, error=error)
        except GraderError:
            replace = True
            raise
        finally:
            self._count("checks")
            self._give_back(worker, replace)

    def grade_batch(self, pairs: Iterable[tuple[str, str | None]], timeout_s: float | None = None) -> list[GradeResult]:
        """Grade (gold, prediction) pairs over the whole pool; results keep the input order."""
        pairs = list(pairs)
        if len(pairs) <= 1:
            return [self.grade(g, p, timeout_s) for g, p in pairs]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(pairs)), thread_name_prefix="thor-grade") as ex:
            return list(ex.map(lambda pair: self.grade(pair[0], pair[1], timeout_s), pairs))

    def grade_completion(self, gold: str, completion_text: str, timeout_s: float | None = None) -> GradeResult:
        """Grade the LAST boxed answer of a completion; no box means incorrect."""
        return self.grade(gold, last_boxed(completion_text), timeout_s)

    def grade_completions(self, pairs: Iterable[tuple[str, str]], timeout_s: float | None = None) -> list[GradeResult]:
        """``grade_completion`` over (gold, completion_text) pairs, in order, across the pool."""
        return self.grade_batch(((g, last_boxed(text)) for g, text in pairs), timeout_s)

    def stats(self) -> dict[str, int]:
        """Counts since start: checks, timeouts, errors, replaced workers (log these per step)."""
        with self._lock:
            return dict(self._stats)

    # -- pool management -----------------------------------------------------
    def _take(self) -> _Worker:
        if os.getpid() != self._pid:
            raise GraderError(
                f"this Grader belongs to process {self._pid}, not {os.getpid()}: create one per process "
                "(the module-level functions do this for you)"
            )
        while not self._closed:
            try:
                return self._idle.get(timeout=0.5)
            except queue.Empty:
                continue
        raise GraderError("this Grader is closed; create a new one")

    def _give_back(self, worker: _Worker, replace: bool) -> None:
        if replace:
            worker.kill()
            if not self._closed:
                worker = self._new_worker()
                self._count("replaced")
        if self._closed:
            worker.stop()
        else:
            self._idle.put(worker)

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    def close(self) -> None:
        """Stop the idle workers now; busy ones stop when their check returns."""
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().stop()
            except queue.Empty:
                return

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------ shared grader

_shared: Grader | None = None
_shared_lock = threading.Lock()


def shared_grader() -> Grader:
    """The process-wide Grader behind the module-level functions (created on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared._closed or _shared._pid != os.getpid():
            import atexit

            _shared = Grader(workers=max(1, min(2, os.cpu_count() or 1)))
            atexit.register(_shared.close)
        return _shared


def answers_equivalent(gold: str, pred: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether ``pred`` is the same answer as ``gold`` (a timeout counts as not equivalent)."""
    return shared_grader().grade(gold, pred, timeout_s).correct


def grade_completion(gold: str, completion_text: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> GradeResult:
    """Grade the last ``\\boxed{}`` answer of ``completion_text`` against ``gold``."""
    return shared_grader().grade_completion(gold, completion_text, timeout_s)


def grade_trajectories(
    records: Sequence, grader: Grader | None = None, timeout_s: float | None = None
) -> list[GradeResult]:
    """Fill ``final_answer`` and ``correct`` on ``Trajectory`` records from their ``completion_text``.

    Records without a gold answer get ``final_answer`` only (``correct`` stays
    None). Returns the GradeResult of each record (None-gold records included,
    with ``correct=False``) so callers can count timeouts.
    """
    grader = grader or shared_grader()
    answers = [last_boxed(r.completion_text) for r in records]
    graded = [i for i, r in enumerate(records) if r.gold_answer is not None]
    results = grader.grade_batch(((records[i].gold_answer, answers[i]) for i in graded), timeout_s)
    by_index = dict(zip(graded, results, strict=True))
    out = []
    for i, record in enumerate(records):
        record.final_answer = answers[i]
        result = by_index.get(i)
        if result is None:
            result = GradeResult(answers[i], False)
        else:
            record.correct = result.correct
        out.append(result)
    return out
