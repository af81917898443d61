"""A TIRGen run: problems, generation, grading, filtering, the SFT export and statistics, resumably.

Files in the run folder (one per shard; ``merge`` joins shards into one):

- ``config.json``: the generation settings; resuming with others is refused
  (filters and export are re-run freely: they only read the files);
- ``problems.jsonl``: the problems of this run (held-out sets exclude them: ``thor_core.data.heldout``);
- ``decontamination.json``: what the check against the evaluation sets removed from the whole drawn list
  (``thor_core.data.decontam``; every shard holds the same report);
- ``cot/``: the CoT pre-filter's evaluation records (``cot_filter_k > 0``);
- ``attempts.jsonl``: every attempt, graded, appended as it finishes. A run
  killed at any moment (SIGKILL) resumes without losing or redoing finished
  attempts (a torn last line is repaired);
- ``kept.jsonl``, ``sft/`` (``thor_core.data.sft_examples``: SFTTrainer-ready
  ``input_ids`` + ``labels``), ``stats.json`` (funnel and statistics),
  ``timing.json`` (start and wall-clock of every generation call; a killed
  call is timed by its last finished attempt).

``python -m thor_core.tirgen --config params/cpu/01_tirgen.yaml --shard 0/4 --out-dir DIR`` runs one
shard; ``python -m thor_core.tirgen merge DIR0 DIR1 ... --out-dir DIR`` merges.

Covered: the above; the stage's steps in their one order (``stage``, which ``run`` and notebook 01 both take).
Not covered: the settings (``config``), the actor-critic loop itself (``actor_critic``), the rules (``filters``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from thor_core.backends import make_backend
from thor_core.backends.base import SamplingParams
from thor_core.data.benchmarks import Problem
from thor_core.data.decontam import REPORT_FILE, report_line, write_report
from thor_core.data.heldout import read_problems, training_set, write_problems
from thor_core.data.sft_examples import save_sft_dataset
from thor_core.engine.rollout import make_tasks, rollout_config, run_coroutine
from thor_core.evaluation.runner import GradedWriter, check_config, evaluate, load_records, math_grader
from thor_core.files import repo_path, write_json_atomic
from thor_core.grading import Grader
from thor_core.models import resolve_model
from thor_core.progress import bar as progress_bar
from thor_core.record import Trajectory, write_jsonl
from thor_core.sandbox import SANDBOX_URL_HELP, open_sandbox
from thor_core.tirgen import actor_critic, filters, report
from thor_core.tirgen.config import TIRGenParams, load_params

# ------------------------------------------------------------------ problems


def problems_for(p: TIRGenParams) -> tuple[list[Problem], dict]:
    """This shard's problems (every n-th of the decontaminated list, starting at i) and the decontamination report
    of the whole list (``thor_core.data.heldout.training_set``: contaminated questions are removed, not refused)."""
    everything, decontamination = training_set(p.problems, p.n_problems, p.problem_seed, p.levels, p.kinds)
    i, n = p.shard_index()
    return everything[i::n], decontamination


# ---------------------------------------------------------------- generation


def cot_prefilter(backend, problems: list[Problem], p: TIRGenParams, out_dir, grader=None) -> list[Problem]:
    """The problems plain CoT does not already solve (all of them when ``cot_filter_k`` is 0).

    Solved: CoT accuracy over ``cot_filter_k`` samples >= ``cot_solved_at``;
    their ids go to ``cot_dropped.json``, the CoT records to ``cot/``.
    """
    out_dir = Path(out_dir)
    solved = cot_solved(backend, problems, p, out_dir, grader) if p.cot_filter_k > 0 else set()
    write_json_atomic(out_dir / "cot_dropped.json", sorted(solved))
    return [q for q in problems if q.id not in solved]


def cot_solved(backend, problems: list[Problem], p: TIRGenParams, out_dir: Path, grader=None) -> set[str]:
    """Question ids that plain CoT solves (accuracy over ``cot_filter_k`` samples >= ``cot_solved_at``)."""
    cfg = rollout_config(p, prefix="cot_", sampling=SamplingParams(temperature=p.actor_temperature), seed=p.seed)
    result = evaluate(
        backend, None, ["tirgen"], p.cot_filter_k, "cot", False, cfg, out_dir / "cot",
        grader=grader, problems={"tirgen": problems},
    )  # fmt: skip
    hits: dict[str, list[bool]] = {}
    for r in result.records:
        hits.setdefault(r.question_id, []).append(bool(r.correct))
    return {q for q, h in hits.items() if sum(h) / len(h) >= p.cot_solved_at}


def generate(
    actor, critic, sandbox, problems: list[Problem], p: TIRGenParams, out_dir: str | os.PathLike,
    grader=None, progress: bool = True,
) -> list[Trajectory]:  # fmt: skip
    """Run every attempt not yet in ``attempts.jsonl``, grading and appending each; all attempts in task order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_config(out_dir / "config.json", p.generation_config())
    actor_critic.check_backends(actor, critic)
    sandbox.health_check()
    cfg = p.tirgen_config()
    tasks = make_tasks(problems, actor.tokenizer, cfg.actor_prompt, n_samples=p.k, seed=p.seed)
    by_id = {q.id: q for q in problems}
    for t in tasks:
        meta = by_id[t.question_id].metadata
        t.metadata.update(kind=meta.get("kind", ""), level=meta.get("level", 0))
    path = out_dir / "attempts.jsonl"
    done = load_records(path)
    todo = [t for t in tasks if (t.question_id, t.metadata["sample"]) not in done]
    session = _start_timing(out_dir, len(todo))
    if todo:
        writer = GradedWriter(path, math_grader(grader))
        try:
            # the bar is made here, on the caller's thread: in Jupyter the coroutine runs on a thread of its own
            bar = progress_bar(len(todo), "TIRGen attempts", "attempt", disable=not progress)
            run_coroutine(_generate_all(actor, critic, sandbox, todo, cfg, p.max_in_flight, writer, bar))
        finally:
            writer.close()
        done = load_records(path)
    _end_timing(out_dir, session)
    return [done[(t.question_id, t.metadata["sample"])] for t in tasks]


async def _generate_all(actor, critic, sandbox, tasks, cfg, max_in_flight: int, writer, bar) -> None:
    gate = asyncio.Semaphore(max_in_flight)

    async def one(task):
        async with gate:
            record = await actor_critic.generate_one(actor, critic, sandbox, task, cfg)
        writer.submit(0, record)
        bar.update(1)

    try:
        await asyncio.gather(*(one(t) for t in tasks))
    finally:
        bar.close()


def _start_timing(out_dir: Path, new: int) -> int:
    """Log a generation call in ``timing.json`` before it starts (a killed call keeps its start)."""
    path = out_dir / "timing.json"
    calls = json.loads(path.read_text())["calls"] if path.exists() else []
    calls.append({"started_at": round(time.time(), 1), "new_attempts": new, "wall_s": None})
    write_json_atomic(path, {"calls": calls})
    return len(calls) - 1


def _end_timing(out_dir: Path, index: int) -> None:
    path = out_dir / "timing.json"
    calls = json.loads(path.read_text())["calls"]
    calls[index]["wall_s"] = round(time.time() - calls[index]["started_at"], 1)
    write_json_atomic(path, {"calls": calls})


def wall_seconds(calls: list[dict], attempts: list[Trajectory]) -> float | None:
    """Generation wall-clock over all calls; a killed call counts until its last finished attempt."""
    if not calls:
        return None
    total = 0.0
    for i, call in enumerate(calls):
        if call.get("wall_s") is not None:
            total += call["wall_s"]
            continue
        until = calls[i + 1]["started_at"] if i + 1 < len(calls) else float("inf")
        ends = [t for r in attempts if call["started_at"] <= (t := _finished_at(r)) < until]
        total += (max(ends) - call["started_at"]) if ends else 0.0
    return round(total, 1)


def _finished_at(record: Trajectory) -> float:
    return record.metadata.get("tirgen", {}).get("finished_at", -1.0)


# ------------------------------------------------------------ filter + export


def finalize(out_dir: str | os.PathLike, tokenizer, p: TIRGenParams, cot_dropped: set[str] | None = None) -> dict:
    """Filter ``attempts.jsonl``, write ``kept.jsonl``, the SFT dataset ``sft/`` and ``stats.json``; return the stats."""
    out_dir = Path(out_dir)
    asked = {q.id for q in read_problems(out_dir)}
    attempts = [r for r in load_records(out_dir / "attempts.jsonl").values() if r.question_id in asked]
    kept, funnel = filters.select(attempts, p.filter_config())
    tmp = out_dir / ".kept.jsonl.tmp"
    write_jsonl(kept, tmp)
    os.replace(tmp, out_dir / "kept.jsonl")
    save_sft_dataset(kept, tokenizer, out_dir / "sft")
    n_questions = len(asked)
    if cot_dropped is None:
        cot_path = out_dir / "cot_dropped.json"
        cot_dropped = set(json.loads(cot_path.read_text())) if cot_path.exists() else set()
    calls = json.loads((out_dir / "timing.json").read_text())["calls"] if (out_dir / "timing.json").exists() else []
    stats = report.statistics_of(attempts, kept, funnel, n_questions, len(cot_dropped), wall_seconds(calls, attempts))
    write_json_atomic(out_dir / "stats.json", stats)
    return stats


# -------------------------------------------------------------------- drivers


def open_backends(p: TIRGenParams, stack):
    """(actor, critic) backends entered on ``stack``; one shared backend when they are the same model."""
    options = {"max_batch": p.max_in_flight} if p.actor_backend == "hf" else {}
    actor = stack.enter_context(make_backend(p.actor_backend, p.actor_model, **options))
    if p.critic_model in (None, p.actor_model) and p.critic_backend in (p.actor_backend, "auto"):
        return actor, actor
    extra = {"base_url": p.critic_base_url} if p.critic_backend == "openai" else {}
    critic = stack.enter_context(make_backend(p.critic_backend, p.critic_model or p.actor_model, **extra))
    return actor, critic


def stage(p: TIRGenParams, out_dir: str | os.PathLike, stack: ExitStack, progress: bool = True):
    """The stage's steps in order, one at a time: a generator of ``(step, result)``.

    ``problems`` (this shard's, recorded in ``problems.jsonl``, the decontamination in ``decontamination.json`` and
    one printed line), ``engines`` (actor, critic, sandbox: entered on
    ``stack``, closed with it), ``cot_prefilter`` (the questions left), ``generate`` (every attempt, graded), and
    ``finalize`` (the filters, the SFT export, the statistics). :func:`run` takes them all; notebook 01 takes one per
    cell, so the order lives here only.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    problems, decontamination = problems_for(p)
    write_problems(problems, out_dir)
    write_report(decontamination, out_dir)
    print(report_line(decontamination))
    yield "problems", problems
    # the sandbox first (local, or the hosts, recorded in sandbox.json): a dead host stops before a model loads
    sandbox = stack.enter_context(open_sandbox(p.sandbox_urls, out_dir))
    actor, critic = open_backends(p, stack)
    grader = stack.enter_context(Grader())
    yield "engines", (actor, critic, sandbox)
    todo = cot_prefilter(actor, problems, p, out_dir, grader)
    yield "cot_prefilter", todo
    yield "generate", generate(actor, critic, sandbox, todo, p, out_dir, grader, progress)
    yield "finalize", finalize(out_dir, actor.tokenizer, p)


def run(p: TIRGenParams, out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """The whole stage for one shard (every step of :func:`stage`); returns the statistics."""
    with ExitStack() as stack:
        *_, (_, stats) = stage(p, out_dir, stack, progress)
    return stats


def merge(shard_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, tokenizer, p: TIRGenParams) -> dict:
    """Join shard folders into ``out_dir`` (problems, attempts, CoT drops, timing) and finalize it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = [json.loads((Path(d) / "config.json").read_text()) for d in shard_dirs]
    if len({json.dumps({**c, "shard": None}, sort_keys=True) for c in configs}) != 1:
        raise ValueError(f"shards {list(map(str, shard_dirs))} were made with different settings (config.json)")
    problems, attempts, dropped, calls = [], [], set(), []
    for d in map(Path, shard_dirs):
        problems += read_problems(d)
        attempts += list(load_records(d / "attempts.jsonl").values())
        if (d / "cot_dropped.json").exists():
            dropped |= set(json.loads((d / "cot_dropped.json").read_text()))
        if (d / "timing.json").exists():
            calls += json.loads((d / "timing.json").read_text())["calls"]
    write_problems(problems, out_dir)
    reports = [Path(d) / REPORT_FILE for d in shard_dirs if (Path(d) / REPORT_FILE).exists()]
    if reports:  # every shard checked the same whole list
        shutil.copyfile(reports[0], out_dir / REPORT_FILE)
    write_jsonl(attempts, out_dir / ".attempts.jsonl.tmp")
    os.replace(out_dir / ".attempts.jsonl.tmp", out_dir / "attempts.jsonl")
    write_json_atomic(out_dir / "cot_dropped.json", sorted(dropped))
    write_json_atomic(out_dir / "timing.json", {"calls": sorted(calls, key=lambda c: c["started_at"])})
    write_json_atomic(out_dir / "config.json", {**configs[0], "shard": f"merged from {len(shard_dirs)}"})
    return finalize(out_dir, tokenizer, p, dropped)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m thor_core.tirgen", description=__doc__.splitlines()[0])
    ap.add_argument("shards", nargs="*", help="'merge' followed by shard folders to merge")
    ap.add_argument("--config", help="a YAML file of TIRGenParams (e.g. params/cpu/01_tirgen.yaml)")
    ap.add_argument("--shard", help="i/n: run only this shard (overrides the file's shard)")
    ap.add_argument("--out-dir", required=True, help="run folder")
    ap.add_argument("--sandbox-url", action="append", dest="sandbox_urls", metavar="URL", help=SANDBOX_URL_HELP)
    args = ap.parse_args(argv)
    p = load_params(repo_path(args.config)) if args.config else TIRGenParams()
    if args.shard:
        p = dataclasses.replace(p, shard=args.shard)
    if args.sandbox_urls:
        p = dataclasses.replace(p, sandbox_urls=args.sandbox_urls)
    if args.shards:
        if args.shards[0] != "merge" or len(args.shards) < 2:
            ap.error("positional arguments: merge DIR [DIR ...]")
        from transformers import AutoTokenizer  # heavy: only the merge needs it here

        stats = merge(args.shards[1:], args.out_dir, AutoTokenizer.from_pretrained(resolve_model(p.actor_model)), p)
    else:
        stats = run(p, args.out_dir, progress=sys.stderr.isatty())
    print(json.dumps({k: stats[k] for k in ("questions", "attempts", "kept", "keep_rate", "s_per_kept")}, indent=1))
    return 0
