"""Evaluation: sample, grade and record math benchmarks, resumably; and its CLI.

Covered:

- ``evaluate``: math benchmarks in TIR or CoT mode, with or without
  self-correction, k samples per problem. Each record is graded as soon as its
  rollout finishes (on a thread pool, so the event loop keeps serving the other
  rollouts) and appended to ``out_dir/records-<tag>.jsonl``. A killed run
  resumes where it stopped: tasks whose (question_id, sample) is already in the
  file are neither re-run nor re-graded; a torn last line is dropped. Resuming
  with a different ``RolloutConfig`` or mode is refused (``config-<tag>.json``), and so is a record whose
  (question_id, sample) comes back with another prompt or gold answer (other problems under the same ids), and so is
  resuming with other weights when the caller names the model (``model``: its safetensors hash is
  recorded, so an RL or SFT checkpoint retrained in place is not mixed with the old one's records).
- ``run_resumable`` and ``finish_run``: that resumable loop and the summary
  files (``summary-<tag>.json`` / ``.md``), shared with HumanEval
  (``thor_core.evaluation.code``).
- A CLI, ``python -m thor_core.evaluation`` (how docs/BASELINE.md was measured).
  Notebook 04's parameters are ``thor_core.evaluation.rungs.RungsParams``.

The metrics a summary holds are in ``thor_core.evaluation.metrics`` (pure
functions), its Markdown tables in ``thor_core.evaluation.report``.

Not covered: grading of answers that are not in ``\\boxed{}``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from thor_core import tir
from thor_core.backends import make_backend
from thor_core.data.benchmarks import Problem, load_benchmark, load_file
from thor_core.engine.rollout import RolloutConfig, RolloutTask, make_tasks, rollout_config, run_rollouts
from thor_core.evaluation.metrics import summarize
from thor_core.evaluation.report import benchmark_table, summary_markdown
from thor_core.files import check_settings, write_json_atomic
from thor_core.grading import shared_grader
from thor_core.models import DEFAULT_MODEL, model_fingerprint
from thor_core.record import Trajectory, iter_jsonl, write_jsonl
from thor_core.sandbox import SANDBOX_URL_HELP, open_sandbox


def run_tag(mode: str, self_correction: bool) -> str:
    """File tag of a run: ``cot``, ``tir`` or ``tir-sc``."""
    return mode + ("-sc" if self_correction else "")


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


MODEL_KEY = "model_sha256"  # in config-<tag>.json: the weights the records came from (when the caller named them)


def check_config(path: Path, config: dict[str, Any]) -> None:
    """Write ``config`` beside the records, or refuse if an earlier run used another one (``files.check_settings``;
    the weights' hash is compared where both sides have it: records from before the key, or a caller without it)."""
    check_settings(path, config, "records", "use another out_dir, or delete the records to start over", (MODEL_KEY,))


def check_same_problems(done: dict[tuple[str, int], Trajectory], tasks: list[RolloutTask], path: Path) -> None:
    """Refuse to resume records that answer other problems under the same (question_id, sample): a held-out set
    drawn with another seed, an edited benchmark file, another prompt template. More problems than before is fine
    (the new ones are sampled); a task whose prompt or gold answer differs from its record's is not."""
    for t in tasks:
        record = done.get(_key(t.question_id, t.metadata["sample"]))
        if record is None:
            continue
        if record.prompt_ids != t.prompt_ids or record.gold_answer != t.gold_answer:
            what = "gold answer" if record.prompt_ids == t.prompt_ids else "prompt (question or template)"
            raise ValueError(
                f"{path} holds a record of {t.question_id!r} (sample {t.metadata['sample']}) with another {what} than "
                f"this run's problem of that id: these records answer other problems; use another out_dir, or "
                "delete the records to start over"
            )


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


def run_resumable(
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
    check_same_problems(done, tasks, path)
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


def finish_run(out_dir: Path, tag: str, records: list[Trajectory], summary: dict[str, Any]) -> EvalResult:
    json_path, md_path = out_dir / f"summary-{tag}.json", out_dir / f"summary-{tag}.md"
    previous = json.loads(json_path.read_text()).get("wall_s_total", 0.0) if json_path.exists() else 0.0
    summary["wall_s_total"] = round(previous + summary["wall_s"], 1)  # this call plus the calls it resumed
    write_json_atomic(json_path, summary)
    md_path.write_text(summary_markdown(summary), encoding="utf-8")
    return EvalResult(tag, records, summary, out_dir / f"records-{tag}.jsonl", json_path, md_path)


def math_grader(grader) -> Callable[[Trajectory], None]:
    if grader is None:
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
    model: str | None = None,
    no_call_score: float = 0.0,
) -> EvalResult:
    """Sample ``k`` rollouts per problem of each benchmark, grade them, write records and summary.

    ``problems`` gives the problems of benchmark names that are not loadable
    (e.g. ``{"heldout": generate_problems(...)}`` with ``benchmarks=["heldout"]``);
    other names are loaded with ``thor_core.data.benchmarks.load_benchmark``. ``model``: the name or folder the
    backend was made from; its weights' hash goes into ``config-<tag>.json``, so resuming the records with
    other weights is refused (``thor_core.runs.provenance.model_fingerprint``). ``no_call_score``: the best-of-N
    curve's score of an answer without code calls (``thor_core.engine.best_of_n``: 0, the kit's, or the authors'
    1.0); the summary is rebuilt from the graded records on every call, so re-running with another score resumes
    every record and samples nothing new.

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
    if not 0.0 <= no_call_score <= 1.0:
        raise ValueError(
            f"no_call_score is an execution pass rate, in [0, 1] (0 or the authors' 1.0), got {no_call_score}"
        )
    if "humaneval" in benchmarks:
        raise ValueError("humaneval is a code benchmark: use thor_core.evaluation.code.evaluate_code")
    cfg = replace(cfg, tools=mode == "tir", self_correction=self_correction)
    tag = run_tag(mode, self_correction)
    out_dir = Path(out_dir)
    tasks = []
    for name in benchmarks:
        given = (problems or {}).get(name)
        chosen = list(given)[:limit] if given is not None else load_benchmark(name, limit=limit)
        for task in make_tasks(chosen, backend.tokenizer, mode, n_samples=k, seed=cfg.seed):
            task.metadata["benchmark"] = benchmark_label(name)
            tasks.append(task)
    config = {"mode": mode, "self_correction": self_correction, "rollout": dataclasses.asdict(cfg)}
    if model is not None:
        config[MODEL_KEY] = model_fingerprint(model)
    records, run = run_resumable(backend, sandbox, tasks, cfg, out_dir, tag, math_grader(grader), config, progress)
    summary = {
        **run,
        "mode": mode,
        "self_correction": self_correction,
        "backend": backend.name,
        "benchmark_names": [benchmark_label(b) for b in benchmarks],
        "limit": limit,
        "rollout": config["rollout"],
        **summarize(records, k, best_of_n, no_call_score=no_call_score),
    }
    return finish_run(out_dir, tag, records, summary)


def benchmark_label(name: str) -> str:
    """How tables name a benchmark: its name, or a user's file by its file name (not the machine's whole path)."""
    return Path(name).name if Path(name).is_file() else name


# ------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m thor_core.evaluation --mode tir --benchmarks aime24 --limit 5 --out-dir outputs/eval``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m thor_core.evaluation", description=evaluate.__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--backend", default="auto", choices=("auto", "hf", "vllm"))
    ap.add_argument("--mode", default="tir", choices=tir.PROMPT_MODES)
    ap.add_argument("--self-correction", action="store_true")
    ap.add_argument("--benchmarks", nargs="+", default=["math500_mmath"])
    ap.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--best-of-n", type=int, default=None)
    ap.add_argument("--no-call-score", type=float, default=0.0,
                    help="best-of-N score of an answer without code calls: 0 (the kit's) or 1.0 (the authors' script)")  # fmt: skip
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--max-new-tokens", type=int, default=2048)
    ap.add_argument("--max-tool-rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--sandbox-url", action="append", dest="sandbox_urls", metavar="URL", help=SANDBOX_URL_HELP)
    ap.add_argument("--question-column", help="a benchmark file's question column (default: problem; dotted paths)")
    ap.add_argument("--answer-column", help="a benchmark file's answer column (default: solution; \\boxed{} reduced)")
    args = ap.parse_args(argv)
    columns = {k: v for k, v in (("question", args.question_column), ("answer", args.answer_column)) if v}
    files = [b for b in args.benchmarks if Path(b).is_file()]
    if columns and not files:
        ap.error("--question-column / --answer-column map a benchmark file's columns: give a file in --benchmarks")
    given = {b: load_file(b, limit=args.limit, **columns) for b in files} if columns else None
    cfg = rollout_config(args)
    tools = args.mode == "tir"
    if args.sandbox_urls and not tools:
        ap.error("--sandbox-url needs --mode tir (chain-of-thought runs no code)")
    with ExitStack() as stack:  # the sandbox first: a host that does not answer stops the run before a model loads
        sandbox = stack.enter_context(open_sandbox(args.sandbox_urls, args.out_dir)) if tools else None
        backend = stack.enter_context(make_backend(args.backend, args.model))
        result = evaluate(
            backend,
            sandbox,
            args.benchmarks,
            args.k,
            "tir" if tools else "cot",
            tools and args.self_correction,
            cfg,
            args.out_dir,
            args.limit,
            args.best_of_n,
            problems=given,
            model=args.model,
            no_call_score=args.no_call_score,
        )
    print(benchmark_table(result.summary))
    print(f"records: {result.records_path}\nsummary: {result.markdown_path}")
    return 0
