"""Evaluation: sample, grade and measure, resumably; plus notebook 04's parameters.

Covered:

- ``evaluate``: math benchmarks in TIR or CoT mode, with or without
  self-correction, k samples per problem. Each record is graded as soon as its
  rollout finishes (on a thread pool, so the event loop keeps serving the other
  rollouts) and appended to ``out_dir/records-<tag>.jsonl``. A killed run
  resumes where it stopped: tasks whose (question_id, sample) is already in the
  file are neither re-run nor re-graded; a torn last line is dropped. Resuming
  with a different ``RolloutConfig`` or mode is refused (``config-<tag>.json``).
- ``evaluate_code``: HumanEval pass@1 (and pass@k): the model's function is run
  against the problem's tests in the sandbox (a one-shot, stateless run per sample).
- ``summarize`` and the metrics behind it (pure functions, unit-tested):
  Avg@k and the unbiased pass@k estimator (Chen et al. 2021,
  ``1 - C(n-c, k) / C(n, k)``) per benchmark and overall; mean policy tokens
  (mask == 1); tool calls, corrections per answer, tool success and timeout
  rates; the 2x2 table (all calls succeeded or not) x (correct or not) over
  trajectories with at least one call, with Pearson's chi-square without
  continuity correction (reproduces THOR_METHOD.md's 336.3) and its p-value
  (df = 1, from ``math.erfc``; no scipy needed); best-of-N accuracy by
  execution pass rate against majority vote, for N = 1..best_of_n when
  k >= N (each problem's samples are cut into consecutive groups of N).
- Summaries as JSON and Markdown (``summary-<tag>.json`` / ``.md``). The
  Markdown tables, ``write_report``, ``render_trajectory`` and
  ``pick_examples`` live in ``thor_core.eval_report`` and are re-exported
  here; ``chi_square_2x2`` and ``chi2_sf_df1`` live in ``thor_core.stats``.
- ``EvalParams``: the schema of notebook 04's parameters; and a CLI,
  ``python -m thor_core.evaluation`` (how docs/BASELINE.md was measured).

Not covered: HumanEval+/MBPP+/LiveCodeBench (no offline data), grading of
answers that are not in ``\\boxed{}``, and statistical tests beyond the 2x2
chi-square. Kept tool calls are counted; attempts that self-correction threw
away appear only in ``corrections_per_answer`` and ``attempt_success_rate``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from thor_core import selection, tir
from thor_core.backends.base import SamplingParams
from thor_core.data import Problem, load_benchmark
from thor_core.eval_report import (  # noqa: F401 (reporting moved there, re-exported)
    benchmark_table,
    best_of_n_table,
    comparison_table,
    describe,
    pick_examples,
    render_trajectory,
    summary_markdown,
    tool_table,
    write_report,
)
from thor_core.models import DEFAULT_MODEL
from thor_core.record import Trajectory, iter_jsonl, write_jsonl
from thor_core.rollout import RolloutConfig, RolloutTask, make_tasks, run_rollouts
from thor_core.runs import write_json_atomic
from thor_core.stats import chi2_sf_df1, chi_square_2x2  # noqa: F401 (chi2_sf_df1 re-exported)

# --------------------------------------------------------------------- params


@dataclass
class EvalParams:
    """Parameters of notebook 04 (correction and inference); see params/*/04_correction_inference.yaml."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "model name (embedded:..., hub id or folder)"})
    backend: Literal["auto", "hf", "vllm"] = field(
        default="auto", metadata={"help": "generation backend (auto: vllm where installed)"}
    )
    benchmarks: list[str] = field(
        default_factory=lambda: ["math500_mmath"], metadata={"help": "benchmark names or files"}
    )
    limit: int | None = field(default=20, metadata={"help": "first N problems of each benchmark (null = all)"})
    k: int = field(default=4, metadata={"help": "samples per problem (Avg@k, pass@k)"})
    temperature: float = field(default=0.6, metadata={"help": "sampling temperature (paper: 0.6)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling"})
    max_new_tokens: int = field(default=2048, metadata={"help": "completion budget, tool outputs included"})
    max_tool_rounds: int = field(
        default=10, metadata={"help": "executed code blocks per rollout (paper: 10 at evaluation)"}
    )
    self_correction: Literal["on", "off", "both"] = field(default="both", metadata={"help": "TIR runs to make"})
    correction_suffix_tokens: int = field(default=500, metadata={"help": "L_suf: tokens dropped before a failed call"})
    max_corrections: int = field(default=4, metadata={"help": "retries per failing call"})
    best_of_n: int | None = field(default=4, metadata={"help": "N of best-of-N (needs k >= N; null = skip)"})
    code_timeout_s: float | None = field(default=None, metadata={"help": "per code call (null = sandbox default)"})
    cot_baseline: bool = field(default=False, metadata={"help": "also evaluate plain chain-of-thought"})
    humaneval_limit: int = field(default=0, metadata={"help": "HumanEval problems for pass@1 (0 = skip)"})
    show_trajectories: int = field(default=3, metadata={"help": "trajectories rendered in the notebook"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    run_dir: str | None = field(default=None, metadata={"help": "output folder (run_notebook sets it)"})

    def __post_init__(self) -> None:
        problems = []
        if self.k < 1:
            problems.append(f"k must be >= 1, got {self.k}")
        if self.best_of_n is not None and not 1 <= self.best_of_n <= self.k:
            problems.append(f"best_of_n must be between 1 and k={self.k} (or null), got {self.best_of_n}")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be >= 1 or null, got {self.limit}")
        if not self.benchmarks:
            problems.append("benchmarks must name at least one benchmark")
        if problems:
            raise ValueError("EvalParams: " + "; ".join(problems))

    def rollout_config(self) -> RolloutConfig:
        return RolloutConfig(
            max_new_tokens=self.max_new_tokens,
            max_tool_rounds=self.max_tool_rounds,
            sampling=SamplingParams(temperature=self.temperature, top_p=self.top_p),
            seed=self.seed,
            correction_suffix_tokens=self.correction_suffix_tokens,
            max_corrections=self.max_corrections,
            code_timeout_s=self.code_timeout_s,
        )

    def variants(self) -> list[tuple[str, bool]]:
        """(mode, self_correction) pairs to evaluate, CoT first when asked for."""
        sc = {"off": [False], "on": [True], "both": [False, True]}[self.self_correction]
        return ([("cot", False)] if self.cot_baseline else []) + [("tir", s) for s in sc]


def run_tag(mode: str, self_correction: bool) -> str:
    """File tag of a run: ``cot``, ``tir`` or ``tir-sc``."""
    return mode + ("-sc" if self_correction else "")


# -------------------------------------------------------------------- metrics


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def benchmark_of(record: Trajectory) -> str:
    return record.metadata.get("benchmark") or record.metadata.get("source") or "unknown"


def _by_problem(records: Sequence[Trajectory]) -> dict[str, list[Trajectory]]:
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for r in records:
        groups[r.question_id].append(r)
    for group in groups.values():
        group.sort(key=lambda r: r.metadata.get("sample", 0))
    return groups


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def group_metrics(records: Sequence[Trajectory], k: int) -> dict[str, Any]:
    """Accuracy, token and tool metrics of one group of graded records (one benchmark, or all)."""
    problems = _by_problem(records)
    correct = [[bool(r.correct) for r in group] for group in problems.values()]
    calls = [c for r in records for c in r.tool_calls]
    n_ok = sum(c.success for c in calls)
    n_corr = sum(len(r.corrections) for r in records)
    n = len(records)
    return {
        "problems": len(problems),
        "samples": n,
        "avg@k": _ratio(sum(sum(c) / len(c) for c in correct), len(correct)),
        "pass@k": _ratio(sum(pass_at_k(len(c), sum(c), min(k, len(c))) for c in correct), len(correct)),
        "answered_rate": _ratio(sum(r.final_answer is not None for r in records), n),
        "truncated_rate": _ratio(sum(r.finish_reason == "length" for r in records), n),
        "mean_policy_tokens": _ratio(sum(r.n_policy_tokens for r in records), n),
        "calls_per_answer": _ratio(len(calls), n),
        "with_calls_rate": _ratio(sum(bool(r.tool_calls) for r in records), n),
        "tool_success_rate": _ratio(n_ok, len(calls)),
        "timeout_rate": _ratio(sum(c.timed_out for c in calls), len(calls)),
        "corrections_per_answer": _ratio(n_corr, n),
        "attempt_success_rate": _ratio(n_ok, len(calls) + n_corr),
    }


def tool_correctness_table(records: Sequence[Trajectory]) -> dict[str, Any]:
    """The 2x2 counts over records with at least one call, with chi-square (no continuity correction)."""
    cells = {"ok_correct": 0, "ok_wrong": 0, "fail_correct": 0, "fail_wrong": 0}
    for r in records:
        if r.tool_calls:
            cells[("ok" if r.all_calls_succeeded else "fail") + ("_correct" if r.correct else "_wrong")] += 1
    test = chi_square_2x2(cells["ok_correct"], cells["ok_wrong"], cells["fail_correct"], cells["fail_wrong"])
    return {**cells, "n": sum(cells.values()), "chi2": test[0] if test else None, "p_value": test[1] if test else None}


def best_of_n_curve(records: Sequence[Trajectory], max_n: int) -> list[dict[str, Any]]:
    """Accuracy of each selector for N = 1..max_n.

    Each problem's samples (by sample index) are cut into consecutive groups of
    N; a problem's score is the mean over its groups, the curve the mean over
    problems with at least N samples. ``single`` is one sample's accuracy,
    ``oracle`` whether any sample of the group is correct (pass@N).
    """
    problems = [g for g in _by_problem(records).values()]
    rows = []
    for n in range(1, max_n + 1):
        scores: dict[str, list[float]] = {"exec_pass_rate": [], "majority_vote": [], "single": [], "oracle": []}
        for group in problems:
            chunks = [group[j : j + n] for j in range(0, len(group) - n + 1, n)]
            if not chunks:
                continue
            for name, select in selection.SELECTORS.items():
                scores[name].append(sum(bool(ch[select(ch, None)].correct) for ch in chunks) / len(chunks))
            scores["single"].append(sum(bool(r.correct) for ch in chunks for r in ch) / (n * len(chunks)))
            scores["oracle"].append(sum(any(r.correct for r in ch) for ch in chunks) / len(chunks))
        rows.append(
            {"n": n, "problems": len(scores["single"]), **{k: _ratio(sum(v), len(v)) for k, v in scores.items()}}
        )
    return rows


def summarize(records: Sequence[Trajectory], k: int, best_of_n: int | None = None) -> dict[str, Any]:
    """Metrics per benchmark and overall, the 2x2 table, and the best-of-N curve when k >= best_of_n."""
    benchmarks: dict[str, list[Trajectory]] = defaultdict(list)
    for r in records:
        benchmarks[benchmark_of(r)].append(r)
    per = {name: group_metrics(group, k) for name, group in benchmarks.items()}
    accuracies = [m["avg@k"] for m in per.values() if m["avg@k"] is not None]
    summary = {
        "k": k,
        "benchmarks": per,
        "overall": group_metrics(records, k),
        "macro_avg@k": _ratio(sum(accuracies), len(accuracies)),
        "tool_vs_correct": tool_correctness_table(records),
        "best_of_n": None,
    }
    if best_of_n is not None and k >= best_of_n:
        summary["best_of_n"] = best_of_n_curve(records, best_of_n)
    return summary


# ------------------------------------------------------------ resumable runs


@dataclass
class EvalResult:
    """What ``evaluate`` / ``evaluate_code`` made: the graded records (task order) and the summary."""

    tag: str
    records: list[Trajectory]
    summary: dict[str, Any]
    records_path: Path
    summary_path: Path
    markdown_path: Path


def _key(question_id: str, sample: int) -> tuple[str, int]:
    return question_id, int(sample)


def load_records(path: str | os.PathLike) -> dict[tuple[str, int], Trajectory]:
    """Graded records of a (possibly killed) run by (question_id, sample); repairs a torn tail or duplicates."""
    path = Path(path)
    if not path.exists():
        return {}
    records: dict[tuple[str, int], Trajectory] = {}
    lines = 0
    for r in iter_jsonl(path):
        lines += 1
        records.setdefault(_key(r.question_id, r.metadata.get("sample", 0)), r)
    raw = path.read_bytes()
    if lines != len(records) or (raw and not raw.endswith(b"\n")):  # rewrite so appends stay valid JSONL
        tmp = path.with_name(f".{path.name}.repair")
        write_jsonl(records.values(), tmp)
        os.replace(tmp, path)
    return records


def check_config(path: Path, config: dict[str, Any]) -> None:
    """Write ``config`` beside the records, or refuse if an earlier run used another one."""
    config = json.loads(json.dumps(config, default=str))
    if path.exists():
        old, new = _flatten(json.loads(path.read_text())), _flatten(config)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            raise ValueError(
                f"{path.parent} holds records made with other settings ({', '.join(changed)} differ, see {path.name}); "
                "use another out_dir, or delete the records to start over"
            )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, config)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class GradedWriter:
    """Grades records on worker threads as rollouts finish and appends each to the JSONL file."""

    def __init__(self, path: Path, grade: Callable[[Trajectory], None], workers: int = 2) -> None:
        self.path, self.grade = path, grade
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thor-eval-grade")
        self.futures: list[Future] = []

    def submit(self, _index: int, record: Trajectory) -> None:
        self.futures.append(self.pool.submit(self._grade_and_write, record))

    def _grade_and_write(self, record: Trajectory) -> None:
        self.grade(record)
        with self.lock:
            write_jsonl([record], self.path, append=True)

    def close(self) -> None:
        """Wait for every submitted record; re-raise the first grading error."""
        self.pool.shutdown(wait=True)
        for f in self.futures:
            f.result()


def _run_resumable(
    backend,
    sandbox,
    tasks: list[RolloutTask],
    cfg: RolloutConfig,
    out_dir: Path,
    tag: str,
    grade: Callable[[Trajectory], None],
    config: dict[str, Any],
    progress: bool,
) -> tuple[list[Trajectory], dict[str, Any]]:
    """Run the tasks not yet in ``records-<tag>.jsonl``, grading and appending each; all records in task order."""
    path = out_dir / f"records-{tag}.jsonl"
    check_config(out_dir / f"config-{tag}.json", config)
    done = load_records(path)
    todo = [t for t in tasks if _key(t.question_id, t.metadata["sample"]) not in done]
    t0 = time.monotonic()
    if todo:
        writer = GradedWriter(path, grade)
        try:
            run_rollouts(backend, sandbox, todo, cfg, progress=progress, on_done=writer.submit)
        finally:
            writer.close()
        done = load_records(path)
    records = [done[_key(t.question_id, t.metadata["sample"])] for t in tasks]
    run = {"tag": tag, "new": len(todo), "resumed": len(tasks) - len(todo), "wall_s": round(time.monotonic() - t0, 1)}
    return records, run


def _finish(out_dir: Path, tag: str, records: list[Trajectory], summary: dict[str, Any]) -> EvalResult:
    json_path, md_path = out_dir / f"summary-{tag}.json", out_dir / f"summary-{tag}.md"
    previous = json.loads(json_path.read_text()).get("wall_s_total", 0.0) if json_path.exists() else 0.0
    summary["wall_s_total"] = round(previous + summary["wall_s"], 1)  # this call plus the calls it resumed
    write_json_atomic(json_path, summary)
    md_path.write_text(summary_markdown(summary), encoding="utf-8")
    return EvalResult(tag, records, summary, out_dir / f"records-{tag}.jsonl", json_path, md_path)


def math_grader(grader) -> Callable[[Trajectory], None]:
    if grader is None:
        from thor_core.grading import shared_grader

        grader = shared_grader()

    def grade(record: Trajectory) -> None:
        result = grader.grade_completion(record.gold_answer, record.completion_text)
        record.final_answer, record.correct = result.answer, bool(result.correct)
        if result.timed_out or result.error:
            record.metadata["grading"] = {"timed_out": result.timed_out, "error": result.error}

    return grade


def evaluate(
    backend,
    sandbox,
    benchmarks: list[str],
    k: int,
    mode: Literal["tir", "cot"],
    self_correction: bool,
    cfg: RolloutConfig,
    out_dir: str | os.PathLike,
    limit: int | None = None,
    best_of_n: int | None = None,
    grader=None,
    progress: bool = True,
    problems: dict[str, Sequence[Problem]] | None = None,
) -> EvalResult:
    """Sample ``k`` rollouts per problem of each benchmark, grade them, write records and summary.

    ``problems`` gives the problems of benchmark names that are not loadable
    (e.g. ``{"heldout": generate_problems(...)}`` with ``benchmarks=["heldout"]``);
    other names are loaded with ``thor_core.data.load_benchmark``.

    ``cfg`` gives limits and sampling; ``mode`` and ``self_correction`` override
    its ``tools`` and ``self_correction``. ``grader`` is anything with
    ``grade_completion(gold, text) -> GradeResult`` (default: the shared
    ``thor_core.grading`` pool). ``sandbox`` may be None in CoT mode. Files:
    ``records-<tag>.jsonl``, ``config-<tag>.json``, ``summary-<tag>.json`` and
    ``.md`` with tag ``cot``, ``tir`` or ``tir-sc``.
    """
    if mode not in tir.PROMPT_MODES:
        raise ValueError(f"mode must be one of {tir.PROMPT_MODES}, got {mode!r}")
    if self_correction and mode != "tir":
        raise ValueError("self-correction needs tool calls: use mode='tir'")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if "humaneval" in benchmarks:
        raise ValueError("humaneval is a code benchmark: use evaluate_code")
    cfg = replace(cfg, tools=mode == "tir", self_correction=self_correction)
    tag = run_tag(mode, self_correction)
    out_dir = Path(out_dir)
    tasks = []
    for name in benchmarks:
        given = (problems or {}).get(name)
        chosen = list(given)[:limit] if given is not None else load_benchmark(name, limit=limit)
        for task in make_tasks(chosen, backend.tokenizer, mode, n_samples=k, seed=cfg.seed):
            task.metadata["benchmark"] = name
            tasks.append(task)
    config = {"mode": mode, "self_correction": self_correction, "rollout": dataclasses.asdict(cfg)}
    records, run = _run_resumable(backend, sandbox, tasks, cfg, out_dir, tag, math_grader(grader), config, progress)
    summary = {
        **run,
        "mode": mode,
        "self_correction": self_correction,
        "backend": backend.name,
        "benchmark_names": list(benchmarks),
        "limit": limit,
        "rollout": config["rollout"],
        **summarize(records, k, best_of_n),
    }
    return _finish(out_dir, tag, records, summary)


# ------------------------------------------------------------------ HumanEval

CODE_SYSTEM_PROMPT = (
    "You are an expert Python programmer. Complete the function the user gives you. "
    "Reply with the complete function, including its signature and any imports it needs, "
    "in a single ```python code block."
)
PASS_MARK = "__THOR_TESTS_PASSED__"


def code_prompt_ids(tokenizer, prompt: str) -> list[int]:
    messages = [
        {"role": "system", "content": CODE_SYSTEM_PROMPT},
        {"role": "user", "content": f"```python\n{prompt}```"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


_ANY_FENCE = re.compile(r"```[A-Za-z0-9_+-]*\n(.*?)(?:```|$)", re.S)


def humaneval_program(metadata: dict[str, Any], completion: str) -> str:
    """The test program: the problem's prompt, the model's code (last python block), the tests, a pass mark.

    The prompt comes first so its imports are there; a completion that defines
    the entry point redefines the stub, one that holds only a body completes it.
    """
    blocks = tir.code_blocks(completion) or [m.group(1) for m in _ANY_FENCE.finditer(completion)]
    code = blocks[-1] if blocks else completion
    return (
        f"{metadata['prompt']}{code}\n\n\n{metadata['test']}\n\n"
        f"check({metadata['entry_point']})\nprint({PASS_MARK!r})\n"
    )


def _code_grader(sandbox, problems: dict[str, dict[str, Any]], timeout_s: float | None) -> Callable[[Trajectory], None]:
    def grade(record: Trajectory) -> None:
        result = sandbox.run(humaneval_program(problems[record.question_id], record.completion_text), timeout_s)
        record.correct = bool(result.exited_cleanly and PASS_MARK in result.stdout)
        record.metadata["test"] = {"observation": result.observation, "timed_out": result.timed_out}

    return grade


def evaluate_code(
    backend,
    sandbox,
    cfg: RolloutConfig,
    out_dir: str | os.PathLike,
    k: int = 1,
    limit: int | None = None,
    timeout_s: float | None = 10.0,
    progress: bool = True,
) -> EvalResult:
    """HumanEval pass@1 / pass@k: generate each function (no tools) and run its tests in ``sandbox``.

    Records go to ``records-humaneval.jsonl`` (resumable as in ``evaluate``); a
    sample passes when the test program (``humaneval_program``) exits cleanly
    and prints its pass mark within ``timeout_s``.
    """
    cfg = replace(cfg, tools=False, self_correction=False, stop_after_answer=False)
    problems = {p.id: p.metadata for p in load_benchmark("humaneval", limit=limit)}
    tasks = [
        RolloutTask(
            qid,
            meta["prompt"],
            None,
            code_prompt_ids(backend.tokenizer, meta["prompt"]),
            seed=zlib.crc32(f"{cfg.seed}/{qid}/{s}".encode()) & 0x7FFFFFFF,
            metadata={"sample": s, "mode": "code", "benchmark": "humaneval"},
        )
        for qid, meta in problems.items()
        for s in range(k)
    ]
    sandbox.health_check()
    config = {"mode": "code", "rollout": dataclasses.asdict(cfg), "timeout_s": timeout_s}
    out_dir = Path(out_dir)
    records, run = _run_resumable(
        backend, sandbox, tasks, cfg, out_dir, "humaneval", _code_grader(sandbox, problems, timeout_s), config, progress
    )
    summary = {
        **run,
        "mode": "code",
        "self_correction": False,
        "backend": backend.name,
        "benchmark_names": ["humaneval"],
        "limit": limit,
        "rollout": config["rollout"],
        **summarize(records, k),
    }
    return _finish(out_dir, "humaneval", records, summary)


# ------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m thor_core.evaluation --mode tir --benchmarks aime24 --limit 5 --out-dir outputs/eval``."""
    import argparse

    from thor_core.backends import make_backend

    ap = argparse.ArgumentParser(prog="python -m thor_core.evaluation", description=evaluate.__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--backend", default="auto", choices=("auto", "hf", "vllm"))
    ap.add_argument("--mode", default="tir", choices=tir.PROMPT_MODES)
    ap.add_argument("--self-correction", action="store_true")
    ap.add_argument("--benchmarks", nargs="+", default=["math500_mmath"])
    ap.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--best-of-n", type=int, default=None)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--max-new-tokens", type=int, default=2048)
    ap.add_argument("--max-tool-rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)
    cfg = RolloutConfig(
        max_new_tokens=args.max_new_tokens,
        max_tool_rounds=args.max_tool_rounds,
        sampling=SamplingParams(temperature=args.temperature),
        seed=args.seed,
    )
    with make_backend(args.backend, args.model) as backend:
        if args.mode == "tir":
            from thor_core.sandbox import Sandbox, SandboxConfig

            with Sandbox(SandboxConfig()) as sandbox:
                result = evaluate(
                    backend,
                    sandbox,
                    args.benchmarks,
                    args.k,
                    "tir",
                    args.self_correction,
                    cfg,
                    args.out_dir,
                    args.limit,
                    args.best_of_n,
                )
        else:
            result = evaluate(
                backend, None, args.benchmarks, args.k, "cot", False, cfg, args.out_dir, args.limit, args.best_of_n
            )
    print(benchmark_table(result.summary))
    print(f"records: {result.records_path}\nsummary: {result.markdown_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
