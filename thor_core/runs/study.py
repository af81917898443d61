"""The thor vs episode study (issue 25): every piece of the controlled comparison with one command, and its analysis.

``python -m thor_core.runs study --params-file params/study/study.yaml [--only PIECE ...] [--dry-run]``
(docs/RL.md, "The thor vs episode study: how to run it").

Covered:

- **Settings.** ``StudyParams`` (params/study/study.yaml): the start checkpoint, modes, seeds, the evaluation, the
  step check and T6. The RL runs' shared settings are a notebook-03 file (``rl_params``); the study gives each run
  its start model, mode, seed and folder, and refuses a file that sets one of them (``RL_SET_BY_STUDY``).
- **The plan** (``plan``): the pieces in order, each a run folder under ``out_dir`` made by a stage's own entry
  point: ``eval-start`` (``thor_core.evaluation.runner.evaluate``: the start on the held-out procedural problems of
  ``thor_core.data.heldout`` and the first MATH-500 problems, TIR prompt, k samples with the same seeds for every
  model); ``eval-base`` (the model the start was fine-tuned from, ``base``, on the same answers: the ladder's T1, so
  that T1 -> T3 is paired too); per seed, ``rl-<mode>-s<seed>`` (``thor_core.rl.trainer.train``, what ``python -m thor_core.rl`` runs),
  ``eval-<mode>-s<seed>`` and ``step-<mode>-s<seed>`` (``thor_core.rl.step_check.step_check`` on the failed calls of
  the start's held-out answers); then ``t6-<mode>`` (self-correction on the mode's best checkpoint: the highest
  held-out accuracy among its seeds in the recorded files, the lower seed on a tie) and ``analysis``.
- **State from recorded files** (``piece_state``): done (the piece's ``manifest.json`` says ``ok`` and the stage's
  own files are complete: RL's ``rl_summary.json`` with every step and ``final/``, an evaluation's summary with
  every answer, ``step_check.json``), partial (anything else in the folder: RL resumes from its checkpoint, an
  evaluation resumes its records, a step check is redone whole, as the stage does), or to do. A done piece is
  skipped; nothing else is kept by the runner, so a study killed at any moment resumes with the same command. The
  held-out set is pinned in ``heldout.json`` when first drawn; a re-run that draws another one stops.
- **Running** (``run_study``): one line per piece (what it is, its state), the stage's own progress lines (RL's
  with an ETA, the evaluation's bar), its wall time; ``study.json`` records each piece's wall time per invocation
  and the CPU it ran on, and each RL run's rollout tokens (from its ``metrics.jsonl``). A missing start checkpoint
  stops before anything runs, with the command that makes it.
- **The analysis** (``write_analysis``, the ``analysis`` piece; recorded files only, no model): per model accuracy
  with n and a 95% Wilson interval; exact McNemar thor vs episode per seed and pooled (pairs on (question_id,
  sample), pooled over seeds) and a per-problem sign test (a problem's seeds summed); where differences come from
  (boxed answers, correctness among pairs both answered, call success, calls per answer); each run against the
  start, and the start against the base; each of these comparisons on each benchmark alone; each RL run's rollout
  tokens and time (thor / episode); the step check per RL checkpoint and thor against
  episode on the same prefixes; T6 against T5 on the best checkpoints. ``analysis/study.md`` and figures (reward per
  step and run, accuracy with intervals, step-check pass rates) in the study folder.

The question order is the RL file's ``data_seed`` for every run (``thor_core.rl.trainer.question_order``); the
study's seeds vary the rollouts.

Not covered: a compute-matched episode run, clustering (the
answer-level tests treat a problem's k samples as independent; the per-problem sign test does not), several
machines (an RL piece's stage command, run elsewhere into the same folder, leaves a finished run that the study
then only records).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import functools
import json
import math
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from matplotlib.figure import Figure

from thor_core.backends import make_backend
from thor_core.data.benchmarks import Problem, load_benchmark
from thor_core.data.heldout import heldout_problems, recorded_problems
from thor_core.engine.rollout import rollout_config
from thor_core.evaluation.before_after import answer_metrics, has_boxed
from thor_core.evaluation.runner import evaluate, run_tag
from thor_core.files import read_jsonl_rows, repo_path, write_json_atomic
from thor_core.hardware import machine
from thor_core.models import DEFAULT_MODEL
from thor_core.params import ParamsError, help_field, load_params_file, read_yaml_mapping, validate_params
from thor_core.plots import save_figure
from thor_core.record import Trajectory, read_jsonl
from thor_core.rl import run as rl_run
from thor_core.rl import step_check as sc
from thor_core.rl.config import RLParams, load_params
from thor_core.rl.trainer import train
from thor_core.runs import quiet_engine_logs, start_run
from thor_core.runs.ladder import read_records
from thor_core.runs.plan import BENCHMARK_SIZES
from thor_core.sandbox import open_sandbox
from thor_core.stats import mcnemar_exact, paired_outcomes, pct, wilson_interval

MATH500 = "math500_mmath"  # the offline MATH-500 set (311 of its 500 problems)
STUDY_FILE = "study.json"  # the study's record: settings, each piece's wall time, CPU and RL rollout tokens
HELDOUT = "heldout.json"  # the held-out and MATH-500 problem ids, pinned when first drawn
REPORT = "study.md"  # the analysis's tables (in <out_dir>/analysis/)
RL_SET_BY_STUDY = ("model", "mode", "seed", "output_dir", "overwrite")
DONE, PARTIAL, TODO = "done", "partial", "to do"
NO_PREFIX = "no failed call in the start model's held-out answers"


@dataclass
class StudyParams:
    """Settings of the study (params/study/study.yaml); the RL runs' own are in the ``rl_params`` file."""

    rl_params: str = help_field("params/study/03_rl.yaml", "the RL runs' shared settings: a notebook-03 file without model, "
                        "mode, seed, output_dir or overwrite (the study sets them per run)")  # fmt: skip
    start: str = help_field(
        "outputs/cpu/02_sft/final", "the SFT checkpoint every run starts from, evaluated as `start`"
    )
    base: str | None = help_field(
        DEFAULT_MODEL,
        "the model the start was fine-tuned from, evaluated as `base` (the "
        "ladder's T1, TIR prompt) on the same answers; null: not evaluated",
    )
    out_dir: str = help_field("outputs/study", "folder of the pieces' run folders, study.json and analysis/")
    modes: list[Literal["thor", "episode"]] = help_field(lambda: ["thor", "episode"], "RL modes compared (T5, T4)")
    seeds: list[int] = help_field(
        lambda: [0, 1], "RL seeds per mode (the rollouts' seeds; the RL file's data_seed keeps one question order)"
    )
    backend: Literal["auto", "hf", "vllm"] = help_field("auto", "engine of the evaluations and step checks")
    sandbox_urls: list[str] | None = help_field(
        None, "sandbox hosts of the evaluations and step checks (null: this machine)"
    )
    heldout_n: int = help_field(150, "held-out procedural problems (thor_core.data.heldout: none of the RL problems)")
    heldout_seed: int = help_field(9001, "their generator seed")
    heldout_exclude: list[str] = help_field(lambda: ["outputs/cpu/01_tirgen"], "run folders whose recorded problems.jsonl "
                                    "the held-out set also avoids (the start's TIRGen problems)")  # fmt: skip
    math500_n: int = help_field(50, f"the first problems of the offline MATH-500 set ({MATH500}); 0: none")
    eval_k: int = help_field(2, "samples per problem, the same seeds for every model")
    eval_temperature: float = help_field(0.6, "sampling temperature of the evaluations")
    eval_max_new_tokens: int = help_field(768, "completion budget of an answer, tool outputs included")
    eval_max_tool_rounds: int = help_field(10, "code calls per answer (T6's retries included)")
    eval_seed: int = help_field(0, "rollout seed of every model's answers and of the step-check continuations")
    eval_correction_suffix_tokens: int = help_field(100, "T6: L_suf, tokens regenerated before a failed call")
    eval_max_corrections: int = help_field(4, "T6: N_corr, retries per failing call")
    step_check_n: int = help_field(
        48, "held-out step check: at most this many failed calls of the start's answers (0: skip)"
    )
    step_check_k: int = help_field(4, "continuations per prefix and model in the step check")

    def __post_init__(self) -> None:
        problems = []
        for name in ("modes", "seeds"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                problems.append(f"{name} must be a non-empty list without repeats, got {values}")
        for name in ("heldout_n", "eval_k", "eval_max_new_tokens", "eval_correction_suffix_tokens", "step_check_k"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("math500_n", "eval_max_tool_rounds", "eval_max_corrections", "step_check_n"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.math500_n > BENCHMARK_SIZES[MATH500]:
            problems.append(f"math500_n must be <= {BENCHMARK_SIZES[MATH500]} (the offline set's size)")
        if problems:
            raise ValueError("StudyParams: " + "; ".join(problems))

    def answers(self) -> int:
        """Answers per model: (held-out + MATH-500 problems) x k."""
        return (self.heldout_n + self.math500_n) * self.eval_k


class StudyError(RuntimeError):
    """The study cannot go on; the message says what is missing and the command that makes it."""


class PieceFailed(RuntimeError):
    """A piece's stage raised; its run folder keeps what it did, and the same command resumes it."""


# ------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Piece:
    """One run folder of the study: ``<out_dir>/<name>/``."""

    name: str
    kind: Literal["eval", "rl", "step", "t6", "analysis"]
    what: str
    mode: str | None = None
    seed: int | None = None
    needs: tuple[str, ...] = ()

    @property
    def run(self) -> str:
        """The model the piece is about: ``start``, ``<mode>-s<seed>`` or (T6) the mode."""
        return self.name.partition("-")[2]  # eval-start -> start, eval-base -> base, rl-thor-s0 -> thor-s0


def run_label(mode: str, seed: int) -> str:
    return f"{mode}-s{seed}"


def plan(s: StudyParams) -> list[Piece]:
    """The pieces in the order they run: the start's evaluation, then per seed each mode's RL run, evaluation and
    step check (a complete paired seed before the next), then T6 per mode and the analysis."""
    answers = f"{s.answers()} answers"
    pieces = [Piece("eval-start", "eval", f"the start ({s.start}) on {answers}")]
    if s.base:
        pieces.append(Piece("eval-base", "eval", f"the base model ({s.base}), T1, on {answers}"))
    for seed in s.seeds:
        runs = [(mode, run_label(mode, seed)) for mode in s.modes]
        pieces += [Piece(f"rl-{r}", "rl", f"RL, {mode} mode, seed {seed}, from the start", mode, seed)
                   for mode, r in runs]  # fmt: skip
        pieces += [Piece(f"eval-{r}", "eval", f"rl-{r}'s final/ on the start's problems and seeds ({answers})",
                         mode, seed, (f"rl-{r}",)) for mode, r in runs]  # fmt: skip
        if s.step_check_n:
            pieces += [Piece(f"step-{r}", "step", f"step-level check: rl-{r} and the start on the start's failed calls",
                             mode, seed, (f"rl-{r}", "eval-start")) for mode, r in runs]  # fmt: skip
    for mode in s.modes:
        evals = tuple(f"eval-{run_label(mode, seed)}" for seed in s.seeds)
        what = f"T6: self-correction (N_corr {s.eval_max_corrections}) on the best {mode} checkpoint"
        pieces.append(Piece(f"t6-{mode}", "t6", what, mode, None, evals))
    pieces.append(Piece("analysis", "analysis", "tables and figures from the recorded files (no model)"))
    return pieces


def select(pieces: list[Piece], patterns: list[str] | None) -> list[Piece]:
    """The pieces whose names match one of ``patterns`` (shell patterns: ``rl-*``), in study order; all without."""
    if not patterns:
        return pieces
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(x.name, p) for x in pieces)]
    if unknown:
        raise StudyError(f"--only {' '.join(unknown)}: no such piece; the pieces: {', '.join(x.name for x in pieces)}")
    return [x for x in pieces if any(fnmatch.fnmatchcase(x.name, p) for p in patterns)]


# ------------------------------------------------------------------ one study: settings, folders, models


@dataclass
class Study:
    """A study's settings, the file they came from, and its folder."""

    s: StudyParams
    params_file: str

    @property
    def root(self) -> Path:
        return repo_path(self.s.out_dir)

    def folder(self, name: str) -> Path:
        return self.root / name

    def rl_params(self, mode: str, seed: int) -> RLParams:
        """One run's RL settings: the shared file with the study's start, the mode, the seed and the run folder."""
        path = repo_path(self.s.rl_params)
        clash = [k for k in RL_SET_BY_STUDY if k in read_yaml_mapping(path)]
        if clash:
            why = "set by the study for each run (its start, modes, seeds and out_dir): remove it"
            raise ParamsError("RLParams", [f"{k}: {why}" for k in clash], str(path))
        folder = self.folder(f"rl-{run_label(mode, seed)}")
        return load_params(path, {"model": self.s.start, "mode": mode, "seed": seed, "output_dir": str(folder)})

    def model(self, run: str) -> str:
        """The weights of ``start``, ``base`` or an RL run (``<mode>-s<seed>``)."""
        if run == "base":
            return self.s.base
        return rl_run.resolve_start_model(self.s.start) if run == "start" else str(self.folder(f"rl-{run}") / "final")

    def command(self, piece: Piece) -> str:
        return f"python -m thor_core.runs study --params-file {self.params_file} --only {piece.name}"

    def stage_command(self, piece: Piece) -> str | None:
        """RL pieces: the stage's own CLI, which the piece runs (the same function, the same folder)."""
        if piece.kind != "rl":
            return None
        return (f"python -m thor_core.rl --config {self.s.rl_params} --model {self.s.start} --mode {piece.mode} "
                f"--seed {piece.seed} --output_dir {self.s.out_dir}/{piece.name}")  # fmt: skip

    @functools.cached_property
    def problems(self) -> dict[str, list[Problem]]:
        """The evaluation's problems: the held-out set (none of the RL problems or of ``heldout_exclude``'s) and the
        first ``math500_n`` of MATH-500; pinned in ``heldout.json`` when first drawn, checked on every later run."""
        s = self.s
        rl = self.rl_params(s.modes[0], s.seeds[0])  # every run trains on the same problems (problem_seed)
        exclude = {"rl training problems": rl_run.training_problems(rl), **recorded_problems(s.heldout_exclude)}
        heldout, note = heldout_problems(s.heldout_n, s.heldout_seed, exclude)
        problems = {
            "heldout": heldout,
            **({MATH500: load_benchmark(MATH500, limit=s.math500_n)} if s.math500_n else {}),
        }
        pin_problems(self.root / HELDOUT, {name: [q.id for q in qs] for name, qs in problems.items()}, note)
        return problems


def pin_problems(path: Path, ids: dict[str, list[str]], note: dict[str, Any]) -> None:
    """Write the problem ids the first time; later, refuse a run that drew other problems (its records would not
    pair with the earlier ones)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"problems": ids, "heldout_note": note})
        return
    pinned = json.loads(path.read_text())["problems"]
    if pinned != ids:
        changed = [name for name in {*pinned, *ids} if pinned.get(name) != ids.get(name)]
        raise StudyError(
            f"the study's problems changed since {path} was written ({', '.join(sorted(changed))}: a changed "
            "heldout_n / heldout_seed / math500_n, or a heldout_exclude folder that appeared or went away); restore "
            "the settings and folders, or use another out_dir"
        )


def load_study(params_file: str) -> Study:
    return Study(load_params_file(StudyParams, repo_path(params_file)), params_file)


def start_problem(s: StudyParams) -> str | None:
    """Why the start checkpoint cannot be used, with the command that makes it; None when it is there."""
    local = repo_path(s.start)
    if not s.start.startswith(("outputs", ".", "/")) and not local.exists():
        return None  # an embedded model or a hub id: thor_core.models resolves it
    if (local / "config.json").is_file():
        return None
    match = re.fullmatch(r"outputs/([\w.-]+)/02_sft/final/?", s.start)
    profile = match.group(1) if match else "<profile>"
    make = (
        f"python -m thor_core.runs 01_tirgen --profile {profile} && python -m thor_core.runs 02_sft --profile {profile}"
    )
    demo = " (or `make demo`, which runs them first)" if profile == "cpu" else ""
    return (f"the start checkpoint {s.start} is missing ({local} has no config.json): it is notebook 02's SFT "
            f"final/; make it with `{make}`{demo}, or set `start` to another checkpoint")  # fmt: skip


# ------------------------------------------------------------------ state from recorded files


def manifest(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def piece_state(study: Study, piece: Piece) -> tuple[str, str]:
    """(done / partial / to do, a detail) from the piece's recorded files only."""
    folder = study.folder(piece.name)
    if piece.kind == "analysis":
        return TODO, "redrawn from the recorded files on every run (seconds)"
    if not folder.is_dir() or not any(folder.iterdir()):
        return TODO, ""
    status = manifest(folder).get("status")
    complete, detail = STATE_OF[piece.kind](study, piece, folder)
    if complete and status == "ok":
        return DONE, detail
    if status == "failed":
        detail = f"failed last time ({manifest(folder).get('error', '')}); {detail}"
    return PARTIAL, detail


def _rl_state(study: Study, piece: Piece, folder: Path) -> tuple[bool, str]:
    steps = study.rl_params(piece.mode, piece.seed).steps
    if rl_run.is_finished(folder) and rl_run.read_summary(folder).get("steps") == steps:
        return True, f"{steps} steps"
    found = rl_run.checkpoints(folder)
    logged = f"{len(rl_run.read_metrics(folder))} of {steps} steps logged"
    if not found:
        return False, f"{logged}, no checkpoint yet: starts again from step 1"
    return False, f"{logged}, checkpoint step {found[-1].name[5:]}: resumes from its checkpoint"


def _eval_state(study: Study, piece: Piece, folder: Path) -> tuple[bool, str]:
    tag = run_tag("tir", piece.kind == "t6")
    summary = folder / f"summary-{tag}.json"
    expected = study.s.answers()
    if summary.is_file() and json.loads(summary.read_text())["overall"]["samples"] == expected:
        return True, f"{expected} answers"
    records = folder / f"records-{tag}.jsonl"
    n = len(read_records(records)) if records.is_file() else 0
    return False, f"{n} of {expected} answers recorded: the evaluation resumes its records"


def _step_state(study: Study, piece: Piece, folder: Path) -> tuple[bool, str]:
    if (folder / sc.RESULT).is_file():
        return True, "step_check.json"
    if manifest(folder).get("result") == NO_PREFIX:
        return True, NO_PREFIX
    return False, f"no {sc.RESULT} yet: the check is redone whole (it has no resume; minutes)"


STATE_OF = {"rl": _rl_state, "eval": _eval_state, "t6": _eval_state, "step": _step_state}


# ------------------------------------------------------------------ running the pieces


def _evaluate(study: Study, folder: Path, model: str, self_correction: bool) -> dict[str, Any]:
    s = study.s
    problems = study.problems
    cfg = rollout_config(s, prefix="eval_")
    with open_sandbox(s.sandbox_urls, folder) as sandbox, make_backend(s.backend, model) as backend:
        result = evaluate(backend, sandbox, list(problems), s.eval_k, "tir", self_correction, cfg, folder,
                          problems=problems, model=model)  # fmt: skip
    overall = result.summary["overall"]
    return {"model": model, "answers": overall["samples"], "avg@k": overall["avg@k"]}


def _run_eval(study: Study, piece: Piece, folder: Path) -> dict[str, Any]:
    return _evaluate(study, folder, study.model(piece.run), self_correction=False)


def _run_rl(study: Study, piece: Piece, folder: Path) -> dict[str, Any]:
    summary = train(study.rl_params(piece.mode, piece.seed))
    return {"steps": summary["steps"], "wall_s": summary["wall_s"], "final": summary["final"]}


def start_answers(study: Study) -> list[Trajectory]:
    """The start's held-out answers (``eval-start``) in task order (problem, then sample): the step check draws its
    prefixes from them with a seeded generator, so their order is fixed."""
    order = {q.id: i for i, q in enumerate(study.problems["heldout"])}
    records = read_records(study.folder("eval-start") / f"records-{run_tag('tir', False)}.jsonl")
    held = [r for (q, _), r in records.items() if q in order]
    return sorted(held, key=lambda r: (order[r.question_id], int(r.metadata.get("sample", 0))))


def _run_step(study: Study, piece: Piece, folder: Path) -> dict[str, Any]:
    s = study.s
    p = dataclasses.replace(study.rl_params(piece.mode, piece.seed), backend=s.backend, sandbox_urls=s.sandbox_urls)
    models = {"start": study.model("start"), "rl": study.model(piece.run)}
    with open_sandbox(s.sandbox_urls, folder) as sandbox:
        report = sc.step_check(p, models, start_answers(study), folder, sandbox, s.step_check_n, s.step_check_k,
                               s.eval_seed)  # fmt: skip
    if report is None:
        return {"result": NO_PREFIX}
    return {"prefixes": report["prefixes"]["n"], "rates": {t: r["rate"] for t, r in report["rates"].items()}}


def best_run(root: Path, mode: str, seeds: list[int]) -> tuple[str, dict[str, float | None]]:
    """The mode's run with the highest held-out accuracy in its recorded answers (the lower seed on a tie), and
    every seed's."""
    accuracy = {}
    for seed in seeds:
        records = _records(root / f"eval-{run_label(mode, seed)}", run_tag("tir", False))
        held = [bool(r.correct) for r in records.values() if _benchmark(r) == "heldout"]
        accuracy[run_label(mode, seed)] = sum(held) / len(held) if held else None
    ranked = [run for run, acc in accuracy.items() if acc is not None]
    if not ranked:
        raise StudyError(f"no held-out answers of any {mode} run under {root}: run its eval pieces first")
    return max(ranked, key=lambda run: accuracy[run]), accuracy  # max keeps the first (lower seed) on a tie


def _run_t6(study: Study, piece: Piece, folder: Path) -> dict[str, Any]:
    best, accuracy = best_run(study.root, piece.mode, study.s.seeds)
    shown = ", ".join(f"{run} {pct(acc)}%" for run, acc in accuracy.items())
    print(f"  best {piece.mode} checkpoint: {best} (held-out accuracy {shown})", flush=True)
    return {"best": best, "heldout_accuracy": accuracy, **_evaluate(study, folder, study.model(best), True)}


def _run_analysis(study: Study, piece: Piece, folder: Path) -> dict[str, Any]:
    return {"report": str(write_analysis(study.root))}


RUN_OF = {"eval": _run_eval, "rl": _run_rl, "step": _run_step, "t6": _run_t6, "analysis": _run_analysis}


def rollout_tokens(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Sampled tokens of an RL run from its ``metrics.jsonl``: episode rollouts (mean length x count), step-level
    continuations (the rest of ``tokens_per_s`` x rollout time), and both."""
    episode = sum(_num(r, "response_tokens") * _num(r, "episode_rollouts") for r in rows)
    every = sum(_num(r, "tokens_per_s") * (_num(r, "time/rollout_s") + _num(r, "time/step_rollout_s")) for r in rows)
    return {"episode": round(episode), "step_level": max(0, round(every - episode)), "all": round(every)}


def _num(row: dict[str, Any], key: str) -> float:
    value = row.get(key)
    return value if isinstance(value, int | float) and math.isfinite(value) else 0.0


def record_piece(study: Study, piece: Piece, wall_s: float, status: str, result: dict[str, Any]) -> None:
    """Add one invocation of a piece to ``study.json``: wall time, status, CPU; an RL run's rollout tokens."""
    path = study.root / STUDY_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    entry = data.setdefault("pieces", {}).setdefault(piece.name, {"kind": piece.kind, "wall_s": 0.0, "runs": []})
    box = machine()
    entry["runs"].append({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": round(wall_s, 1),
                          "status": status, "cpu": box.get("cpu_model"), "cpus": box["cpus"]})  # fmt: skip
    entry["wall_s"] = round(entry["wall_s"] + wall_s, 1)
    entry["result"] = result
    if piece.kind == "rl":
        entry["rollout_tokens"] = rollout_tokens(rl_run.read_metrics(study.folder(piece.name)))
    write_json_atomic(path, data)


def begin(study: Study) -> None:
    """``study.json``'s settings (the analysis rebuilds the plan from them), written before the first piece."""
    path = study.root / STUDY_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(params=dataclasses.asdict(study.s), params_file=study.params_file,
                rl_params=read_yaml_mapping(repo_path(study.s.rl_params)))  # fmt: skip
    study.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)


def run_piece(study: Study, piece: Piece) -> dict[str, Any]:
    """Run (or resume) one piece inside its run folder's manifest; its result goes into the manifest."""
    settings = {
        "piece": piece.name,
        "kind": piece.kind,
        "mode": piece.mode,
        "seed": piece.seed,
        "study": study.params_file,
    }
    with start_run(piece.name, settings, study.root, seed=piece.seed, resume=True, machine=machine()) as run:
        result = RUN_OF[piece.kind](study, piece, run.dir)
        run.manifest["result"] = result.get("result", result)
    return result


def run_study(study: Study, only: list[str] | None = None, out=None) -> int:
    """Every selected piece in order: done ones skipped, the others run or resumed; 0 when all finished."""
    out = out or sys.stdout
    pieces = select(plan(study.s), only)
    everything = {x.name: x for x in plan(study.s)}
    states = {x.name: piece_state(study, x) for x in pieces}
    if any(x.kind != "analysis" and states[x.name][0] != DONE for x in pieces) and (why := start_problem(study.s)):
        raise StudyError(why)
    begin(study)
    for i, piece in enumerate(pieces, 1):
        head = f"[{i}/{len(pieces)}] {piece.name}"
        state, detail = piece_state(study, piece) if piece.kind == "analysis" else states[piece.name]
        if state == DONE:
            print(f"{head}: done before ({detail}); skipped", file=out, flush=True)
            continue
        for need in piece.needs:
            if (got := piece_state(study, everything[need]))[0] != DONE:
                raise StudyError(f"{piece.name} needs {need}, which is {got[0]}: run it first "
                                 f"(`{study.command(everything[need])}`)")  # fmt: skip
        print(f"{head}: {piece.what} -> {study.folder(piece.name)} ({state}{': ' + detail if detail else ''})",
              file=out, flush=True)  # fmt: skip
        t0 = time.monotonic()
        try:
            result = run_piece(study, piece)
        except BaseException as e:  # Ctrl-C too: its time is recorded; a SIGKILL's is not (the stage's own is)
            error = f"{type(e).__name__}: {e}"
            record_piece(study, piece, time.monotonic() - t0, "failed", {"error": error})
            if not isinstance(e, Exception):
                raise
            raise PieceFailed(
                f"{piece.name} failed: {error}\n  run folder: {study.folder(piece.name)}\n  the same command resumes it"
            ) from e
        wall = time.monotonic() - t0
        record_piece(study, piece, wall, "ok", result)
        print(f"{head}: finished in {wall:.0f} s", file=out, flush=True)
    return 0


def dry_run(study: Study, only: list[str] | None = None) -> str:
    """The pieces, their state and the command of each; nothing runs, nothing is written."""
    why = start_problem(study.s)
    lines = [f"study {study.params_file} -> {study.root}",
             f"start: {study.s.start} ({'MISSING: ' + why if why else 'found'})", ""]  # fmt: skip
    for i, piece in enumerate(select(plan(study.s), only), 1):
        state, detail = piece_state(study, piece)
        lines.append(f"{i:2}. {piece.name:<18} {state:<8} {piece.what}" + (f" [{detail}]" if detail else ""))
        lines.append(f"    $ {study.command(piece)}")
        if stage := study.stage_command(piece):
            lines.append(f"      (runs the stage: {stage})")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the analysis (recorded files only)


def _records(folder: Path, tag: str) -> dict[tuple[str, int], Trajectory]:
    path = folder / f"records-{tag}.jsonl"
    return read_records(path) if path.is_file() else {}


def _benchmark(record: Trajectory) -> str:
    return record.metadata.get("benchmark", "")


def sign_test(first: dict[tuple, bool], second: dict[tuple, bool]) -> dict[str, Any]:
    """Per problem (a key's question id: ``(question_id, sample)`` or, pooled, ``(seed, question_id, sample)``, so a
    problem's seeds add up): ``second`` right more often than ``first`` over the shared keys (better), less (worse),
    as often (tied); the two-sided sign test on better against worse."""
    diff: dict[str, int] = defaultdict(int)
    for key in set(first) & set(second):
        diff[key[-2]] += int(second[key]) - int(first[key])
    better, worse = sum(d > 0 for d in diff.values()), sum(d < 0 for d in diff.values())
    return {"n": len(diff), "better": better, "worse": worse, "tied": len(diff) - better - worse,
            "p_value": mcnemar_exact(worse, better)}  # fmt: skip


def outcomes(records: dict[tuple, Trajectory], test=None) -> dict[tuple, bool]:
    """key -> correct (or ``test(record)``)."""
    return {k: bool(test(r) if test else r.correct) for k, r in records.items()}


def pooled(by_seed: dict[int, dict[tuple, Trajectory]]) -> dict[tuple, Trajectory]:
    """Several seeds' records as one mapping keyed (seed, question_id, sample)."""
    return {(seed, *key): r for seed, records in by_seed.items() for key, r in records.items()}


def compare(first: dict[tuple, Trajectory], second: dict[tuple, Trajectory]) -> dict[str, Any]:
    """Paired tests of ``second`` against ``first``: correctness (McNemar and per-problem sign test), boxed
    answers, correctness among the pairs where both boxed an answer, and where each side's gains come from."""
    right_a, right_b = outcomes(first), outcomes(second)
    boxed_a, boxed_b = outcomes(first, has_boxed), outcomes(second, has_boxed)
    shared = set(first) & set(second)
    both = {k for k in shared if boxed_a[k] and boxed_b[k]}
    return {
        "correct": paired_outcomes(right_a, right_b),
        "problems": sign_test(right_a, right_b),
        "boxed": paired_outcomes(boxed_a, boxed_b),
        "both_answered": paired_outcomes({k: right_a[k] for k in both}, {k: right_b[k] for k in both}),
        "gains_first_other_unanswered": sum(right_a[k] and not right_b[k] and not boxed_b[k] for k in shared),
        "gains_second_other_unanswered": sum(right_b[k] and not right_a[k] and not boxed_a[k] for k in shared),
    }


def model_row(records: list[Trajectory]) -> dict[str, Any]:
    """Per model: accuracy with its Wilson interval, per benchmark, and where answers go right or wrong."""
    m = answer_metrics(records)
    hits = sum(bool(r.correct) for r in records)
    boxed = [r for r in records if has_boxed(r)]
    per = defaultdict(list)
    for r in records:
        per[_benchmark(r)].append(bool(r.correct))
    return {**m, "correct": hits, "ci95": wilson_interval(hits, len(records)),
            "problems": len({r.question_id for r in records}),
            "correct_when_boxed": sum(bool(r.correct) for r in boxed) / len(boxed) if boxed else None,
            "calls_per_answer": m["calls"] / len(records) if records else None,
            "tokens": sum(r.n_policy_tokens for r in records) / len(records) if records else None,
            "corrections_per_answer": sum(len(r.corrections) for r in records) / len(records) if records else None,
            "benchmarks": {b: (sum(v), len(v)) for b, v in sorted(per.items())}}  # fmt: skip


@dataclass
class Collected:
    """What the study's folders hold: the plan, every model's answers, RL metrics, step checks, costs."""

    s: StudyParams
    root: Path
    answers: dict[str, dict[tuple, Trajectory]]  # base, start, <mode>-s<seed>, t6-<mode>
    t6_best: dict[str, str]  # mode -> the run T6 evaluated
    metrics: dict[str, list[dict[str, Any]]]  # run -> metrics.jsonl rows
    steps: dict[str, dict[str, Any]]  # run -> step_check.json
    pieces: dict[str, dict[str, Any]]  # study.json's per-piece record

    @property
    def runs(self) -> list[str]:
        return runs_of(self.s)


def runs_of(s: StudyParams) -> list[str]:
    """The RL runs, seed by seed."""
    return [run_label(mode, seed) for seed in s.seeds for mode in s.modes]


def collect(root: str | Path) -> Collected:
    """Read a study folder: ``study.json``'s settings and pieces, and each piece's recorded files. Never writes."""
    root = Path(root)
    path = root / STUDY_FILE
    if not path.is_file():
        raise StudyError(f"no {STUDY_FILE} in {root}: run the study first (python -m thor_core.runs study ...)")
    data = json.loads(path.read_text())
    s = validate_params(StudyParams, data["params"], str(path))
    tir, runs = run_tag("tir", False), runs_of(s)
    answers = {run: _records(root / f"eval-{run}", tir) for run in ["base", "start", *runs]}
    t6_best = {}
    for mode in s.modes:
        record = manifest(root / f"t6-{mode}").get("result") or {}
        if record.get("best"):
            t6_best[mode] = record["best"]
            answers[f"t6-{mode}"] = _records(root / f"t6-{mode}", run_tag("tir", True))
    metrics = {run: read_jsonl_rows(root / f"rl-{run}" / rl_run.METRICS) for run in runs}
    steps = {run: json.loads(p.read_text()) for run in runs if (p := root / f"step-{run}" / sc.RESULT).is_file()}
    return Collected(s, root, {k: v for k, v in answers.items() if v}, t6_best, metrics, steps, data.get("pieces", {}))


def _ci(row: dict[str, Any]) -> str:
    lo, hi = row["ci95"]
    return f"**{pct(row['accuracy'])}** [{pct(lo)}, {pct(hi)}]"


def accuracy_table(c: Collected) -> str:
    """Markdown: one row per model (T6 rows say which checkpoint)."""
    names = list(dict.fromkeys(b for recs in c.answers.values() for b in map(_benchmark, recs.values())))
    head = ["model", "n answers (problems)", "accuracy % [95% Wilson]", *[f"{b} %" for b in names], "boxed %",
            "correct when boxed %", "calls / answer", "calls succeeding %", "tokens / answer"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, records in c.answers.items():
        row = model_row(list(records.values()))
        shown = f"{label} (T6 on {c.t6_best[label[3:]]})" if label.startswith("t6-") else label
        per = [f"{pct(h / n)} ({n})" if n else "-" for h, n in (row["benchmarks"].get(b, (0, 0)) for b in names)]
        lines.append(f"| {shown} | {row['n']} ({row['problems']}) | {_ci(row)} | " + " | ".join(per) +
                     f" | {pct(row['boxed_rate'])} | {pct(row['correct_when_boxed'])} | "
                     f"{row['calls_per_answer']:.2f} | {pct(row['call_success_rate'])} | {row['tokens']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def seed_pairs(c: Collected) -> dict[int, tuple[dict[tuple, Trajectory], dict[tuple, Trajectory]]]:
    """Seed -> (episode's answers, thor's answers), for the seeds where both were evaluated."""
    if not {"thor", "episode"} <= set(c.s.modes):
        return {}
    pairs = {
        seed: (c.answers.get(run_label("episode", seed)), c.answers.get(run_label("thor", seed))) for seed in c.s.seeds
    }
    return {seed: (e, t) for seed, (e, t) in pairs.items() if e and t}


def start_pairs(c: Collected) -> list[tuple[str, dict[tuple, Trajectory], dict[tuple, Trajectory]]]:
    """(label, first, second): the start against the base (T1 -> T3: what SFT did), then each RL run against it."""
    start, base = c.answers.get("start"), c.answers.get("base")
    out = [("base -> start", base, start)] if base and start else []
    return out + [(f"start -> {run}", start, c.answers[run]) for run in c.runs if start and run in c.answers]


def comparisons(c: Collected) -> list[tuple[str, dict[str, Any]]]:
    """(label, ``compare`` result) for thor against episode per seed and pooled over seeds (first: episode)."""
    pairs = seed_pairs(c)
    out = [(f"seed {seed}: episode -> thor", compare(e, t)) for seed, (e, t) in pairs.items()]
    if len(pairs) > 1:
        firsts, seconds = {seed: e for seed, (e, _) in pairs.items()}, {seed: t for seed, (_, t) in pairs.items()}
        out.append((f"pooled over seeds {', '.join(map(str, pairs))}: episode -> thor",
                    compare(pooled(firsts), pooled(seconds))))  # fmt: skip
    return out


def against_start(c: Collected) -> list[tuple[str, dict[str, Any]]]:
    return [(label, compare(first, second)) for label, first, second in start_pairs(c)]


def per_benchmark(c: Collected) -> list[tuple[str, dict[str, Any]]]:
    """The start against the base, each run against the start and thor against episode per seed, on each benchmark
    alone: SFT or RL can move the held-out problems and MATH-500 apart (the cpu SFT did: docs/RL.md, the study)."""
    pairs = start_pairs(c) + [(f"seed {seed}: episode -> thor", e, t) for seed, (e, t) in seed_pairs(c).items()]
    out = []
    for label, first, second in pairs:
        for bench in sorted({_benchmark(r) for r in first.values()}):
            keys = {k for k, r in first.items() if _benchmark(r) == bench}
            chosen = ({k: first[k] for k in keys}, {k: r for k, r in second.items() if k in keys})
            out.append((f"{label}: {bench}", compare(*chosen)))
    return out


def paired_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: exact McNemar on (question, sample) pairs and the per-problem sign test, one row per comparison."""
    if not rows:
        return "no pair of models with answers yet\n"
    lines = ["| comparison (first -> second) | pairs | right only first | right only second | accuracy first -> second (%) "
             "| McNemar p | problems: second better / worse / tied | sign test p |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, t in rows:
        r, p = t["correct"], t["problems"]
        change = f"{pct(r['rate_first'])} -> {pct(r['rate_second'])}" if r["n"] else "-"
        lines.append(f"| {label} | {r['n']} | {r['only_first']} | {r['only_second']} | {change} | {r['p_value']:.3g} "
                     f"| {p['better']} / {p['worse']} / {p['tied']} | {p['p_value']:.3g} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def sources_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: where the differences come from (answered at all; right when both answered)."""
    if not rows:
        return "no pair of models with answers yet\n"
    lines = ["| comparison (first -> second) | boxed only first / only second (p) | both boxed: pairs, right only first / "
             "only second (p) | right only first, second unboxed | right only second, first unboxed |",
             "|---|---|---|---|---|"]  # fmt: skip
    for label, t in rows:
        b, both = t["boxed"], t["both_answered"]
        lines.append(f"| {label} | {b['only_first']} / {b['only_second']} ({b['p_value']:.3g}) | {both['n']}: "
                     f"{both['only_first']} / {both['only_second']} ({both['p_value']:.3g}) | "
                     f"{t['gains_first_other_unanswered']} | {t['gains_second_other_unanswered']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


TIMES = ("step_s", "rollout_s", "step_rollout_s", "update_s")  # metrics.jsonl's time/<key>, summed per run


def compute_rows(c: Collected) -> dict[str, dict[str, Any]]:
    """Per RL run with metrics: steps, rollouts, rollout tokens and the time of its steps (``metrics.jsonl``), and
    the piece's wall time over its invocations (``study.json``)."""
    out = {}
    for run, rows in c.metrics.items():
        if not rows:
            continue
        out[run] = {"steps": len(rows), "episode_rollouts": int(sum(_num(r, "episode_rollouts") for r in rows)),
                    "step_rollouts": int(sum(_num(r, "step_rollouts") for r in rows)), "tokens": rollout_tokens(rows),
                    **{k: sum(_num(r, f"time/{k}") for r in rows) for k in TIMES},
                    "piece_wall_s": c.pieces.get(f"rl-{run}", {}).get("wall_s")}  # fmt: skip
    return out


def compute_table(c: Collected) -> str:
    """Markdown: each RL run's rollout tokens and time, then thor / episode per seed."""
    rows = compute_rows(c)
    if not rows:
        return "no RL run has logged a step yet\n"
    lines = ["| run | steps | episode rollouts | step-level continuations | rollout tokens: episode / step level / all | "
             "time in steps s (rollouts / step level / update) | piece wall s |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for run, r in rows.items():
        t = r["tokens"]
        wall = f"{r['piece_wall_s']:.0f}" if r["piece_wall_s"] is not None else "-"
        lines.append(f"| {run} | {r['steps']} | {r['episode_rollouts']} | {r['step_rollouts']} | {t['episode']:,} / "
                     f"{t['step_level']:,} / {t['all']:,} | {r['step_s']:.0f} ({r['rollout_s']:.0f} / "
                     f"{r['step_rollout_s']:.0f} / {r['update_s']:.0f}) | {wall} |")  # fmt: skip
    for seed in c.s.seeds:
        t, e = rows.get(run_label("thor", seed)), rows.get(run_label("episode", seed))
        if t and e and e["tokens"]["all"] and e["step_s"]:
            lines.append(f"| thor / episode, seed {seed} | | | | {t['tokens']['all'] / e['tokens']['all']:.2f}x | "
                         f"{t['step_s'] / e['step_s']:.2f}x | |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _rate(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{pct(r['rate'])} ({r['passed']}/{r['n']}) [{pct(lo)}, {pct(hi)}]"


def step_reports(c: Collected) -> list[tuple[str, dict[str, Any]]]:
    """(label, step-check report): each run against the start, then thor against episode per seed on the same
    prefixes (their RL continuations, ``step-check-rl.jsonl``), where both checks used the same prefixes."""
    out = [(f"start -> {run}", c.steps[run]) for run in c.runs if run in c.steps]
    for seed in c.s.seeds:
        e, t = run_label("episode", seed), run_label("thor", seed)
        if e in c.steps and t in c.steps and c.steps[e]["settings"]["prefixes"] == c.steps[t]["settings"]["prefixes"]:
            by_tag = {e: read_jsonl(c.root / f"step-{e}" / "step-check-rl.jsonl"),
                      t: read_jsonl(c.root / f"step-{t}" / "step-check-rl.jsonl")}  # fmt: skip
            out.append((f"{e} -> {t} (same prefixes)", sc.summarize(by_tag, c.steps[t]["settings"])))
    return out


def step_table(c: Collected) -> str:
    """Markdown: step-level pass rates on the start's held-out prefixes, pair-level McNemar, prefix sign test."""
    reports = step_reports(c)
    if not reports:
        return "no step check recorded yet\n"
    lines = ["| comparison (first -> second) | prefixes | pass rate first | pass rate second | discordant pairs (p) | "
             "prefixes: second better / worse / tied | sign test p |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, rep in reports:
        first, second = rep["labels"]
        pairs, pre = rep["pairs"], rep["prefixes"]
        lines.append(f"| {label} | {pre['n']} | {_rate(rep['rates'][first])} | {_rate(rep['rates'][second])} | "
                     f"{pairs['only_first']} vs {pairs['only_second']} ({pairs['p_value']:.3g}) | {pre['better']} / "
                     f"{pre['worse']} / {pre['tied']} | {pre['p_value']:.3g} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def t6_table(c: Collected) -> str:
    """Markdown: T6 (self-correction) against T5 (the same checkpoint without it) on the same pairs, per mode."""
    rows = []
    for mode, best in c.t6_best.items():
        t5, t6 = c.answers.get(best), c.answers.get(f"t6-{mode}")
        if t5 and t6:
            t = compare(t5, t6)
            r, p = t["correct"], t["problems"]
            corr = model_row(list(t6.values()))["corrections_per_answer"]
            rows.append(f"| {mode}: {best} | {r['n']} | {pct(r['rate_first'])} -> {pct(r['rate_second'])} | "
                        f"{r['only_first']} vs {r['only_second']} ({r['p_value']:.3g}) | {p['better']} / {p['worse']} / "
                        f"{p['tied']} ({p['p_value']:.3g}) | {corr:.2f} |")  # fmt: skip
    if not rows:
        return "no T6 run recorded yet\n"
    head = ("| best checkpoint | pairs | accuracy without -> with self-correction (%) | right only without vs only with "
            "(McNemar p) | problems: better / worse / tied (sign p) | corrections / answer |\n|---|---|---|---|---|---|")  # fmt: skip
    return head + "\n" + "\n".join(rows) + "\n"


# ------------------------------------------------------------------ figures


STYLES = ("-", "--", ":", "-.")


def plot_rewards(c: Collected, out_dir: Path) -> Path:
    """Episode reward and step-level pass rate per step, one line per run (colour: mode, line: seed)."""
    fig = Figure(figsize=(10, 3.4))
    axes = fig.subplots(1, 2)
    for (key, title), ax in zip((("reward", "episode reward"), ("step_pass_rate", "step-level pass rate")), axes):
        for run, rows in c.metrics.items():
            mode, seed = run.rsplit("-s", 1)
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
            if pts:
                ax.plot(*zip(*pts), marker="o", color=f"C{c.s.modes.index(mode)}",
                        ls=STYLES[c.s.seeds.index(int(seed)) % len(STYLES)], label=run)  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_dir / "rewards.png", pdf=True)


def plot_accuracy(c: Collected, out_dir: Path) -> Path:
    """Accuracy per model with its 95% Wilson interval."""
    fig = Figure(figsize=(max(5, 1.1 * len(c.answers)), 3.4))
    ax = fig.subplots()
    for x, (label, records) in enumerate(c.answers.items()):
        row = model_row(list(records.values()))
        acc, (lo, hi) = 100 * row["accuracy"], row["ci95"]
        ax.errorbar(x, acc, [[acc - 100 * lo], [100 * hi - acc]], fmt="o", capsize=4, color=_colour(c, label))
        ax.text(x, 100 * hi + 1, f"{acc:.1f}\nn={row['n']}", ha="center", fontsize=7)
    ax.set_xticks(range(len(c.answers)), list(c.answers), fontsize=8, rotation=20)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 115)
    ax.set_title("Accuracy per model (95% Wilson interval)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_dir / "accuracy.png", pdf=True)


def _colour(c: Collected, label: str) -> str:
    mode = label[3:] if label.startswith("t6-") else label.rsplit("-s", 1)[0]
    return f"C{c.s.modes.index(mode)}" if mode in c.s.modes else "black"


def plot_step_check(c: Collected, out_dir: Path) -> Path | None:
    """Step-level pass rate on the start's held-out prefixes: the start and each RL checkpoint, 95% intervals."""
    runs = [run for run in c.runs if run in c.steps]
    if not runs:
        return None
    fig = Figure(figsize=(max(5, 1.6 * len(runs)), 3.4))
    ax = fig.subplots()
    for x, run in enumerate(runs):
        for dx, tag, colour in ((-0.12, "start", "black"), (0.12, "rl", _colour(c, run))):
            r = c.steps[run]["rates"][tag]
            rate, (lo, hi) = 100 * r["rate"], r["ci95"]
            ax.errorbar(x + dx, rate, [[rate - 100 * lo], [100 * hi - rate]], fmt="o", capsize=4, color=colour,
                        label=("start" if tag == "start" else "RL checkpoint") if x == 0 else None)  # fmt: skip
    ax.set_xticks(range(len(runs)), runs, fontsize=8)
    ax.set_ylabel("pass rate (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7)
    ax.set_title("Step-level pass rate on the start's held-out prefixes (95% Wilson)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_dir / "step_check.png", pdf=True)


def status_lines(c: Collected) -> str:
    """Each piece's status as its manifest records it: the tables below use what the folders hold, finished or not."""
    lines = []
    for piece in plan(c.s)[:-1]:
        status = manifest(c.root / piece.name).get("status")
        said = {"ok": "finished", "running": "started, not finished (running, or killed)"}.get(status, status)
        lines.append(f"- `{piece.name}`: {said or 'not started'}")
    return "\n".join(lines) + "\n"


def report_markdown(c: Collected, figures: dict[str, Path]) -> str:
    """The study's tables, with what is not recorded yet said as such."""
    s = c.s
    accuracy = accuracy_table(c) if c.answers else "no evaluation recorded yet\n"
    parts = [
        "# The thor vs episode study\n",
        f"From `{s.start}`; modes {', '.join(s.modes)}, seeds {', '.join(map(str, s.seeds))}; every model on "
        f"{s.heldout_n} held-out procedural problems (seed {s.heldout_seed})"
        + (f" and the first {s.math500_n} of MATH-500" if s.math500_n else "")
        + f" x k = {s.eval_k}, TIR prompt, T = {s.eval_temperature}, {s.eval_max_new_tokens} tokens, "
        f"{s.eval_max_tool_rounds} calls, the same seeds. Intervals: 95% Wilson; tests: exact McNemar on (question, "
        "sample) pairs (pooled: (seed, question, sample)), sign test per problem (the one that does not treat a "
        "problem's samples as independent).\n",
        f"## Pieces\n\n{status_lines(c)}",
        f"## Accuracy per model\n\n{accuracy}",
        f"## Thor against episode, paired\n\n{paired_table(comparisons(c))}",
        f"## Where the differences come from\n\n{sources_table(comparisons(c))}",
        f"## The start against the base, each RL run against the start\n\n{paired_table(against_start(c))}\n{sources_table(against_start(c))}",
        f"## Each comparison on each benchmark alone\n\n{paired_table(per_benchmark(c))}",
        f"## Extra compute of the step level\n\n{compute_table(c)}",
        f"## The step level on held-out prefixes\n\n{step_table(c)}",
        f"## T6: self-correction on the best checkpoint of each mode\n\n{t6_table(c)}",
        "## Figures\n\n" + "".join(f"- {name}: `{path.name}` (and `.pdf`)\n" for name, path in figures.items()),
    ]
    return "\n".join(parts)


def write_analysis(root: str | Path, out_dir: str | Path | None = None) -> Path:
    """``study.md`` and the figures from the study folder's recorded files, into ``out_dir`` (default
    ``<root>/analysis``; notebook 05 gives its own run folder); returns the report's path."""
    c = collect(root)
    out_dir = Path(out_dir) if out_dir is not None else Path(root) / "analysis"
    figures = {"rewards": plot_rewards(c, out_dir), "step_check": plot_step_check(c, out_dir)}
    if c.answers:
        figures["accuracy"] = plot_accuracy(c, out_dir)
    figures = {k: v for k, v in figures.items() if v is not None}
    path = out_dir / REPORT
    path.write_text(report_markdown(c, figures), encoding="utf-8")
    return path


# ------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m thor_core.runs study --params-file params/study/study.yaml [--only PIECE ...] [--dry-run]``."""
    ap = argparse.ArgumentParser(
        prog="python -m thor_core.runs study",
        description="The thor vs episode study: every piece in order, done ones skipped, the others run or resumed.",
    )
    ap.add_argument("--params-file", default="params/study/study.yaml", help="the study's settings (StudyParams)")
    ap.add_argument("--only", nargs="+", metavar="PIECE", help="these pieces only (shell patterns: 'rl-*')")
    ap.add_argument("--dry-run", action="store_true", help="print the pieces, their state and commands; run nothing")
    args = ap.parse_args(argv)
    quiet_engine_logs()  # a study starts ~20 engines: their INFO lines would bury the pieces' progress
    try:
        study = load_study(args.params_file)
        if args.dry_run:
            print(dry_run(study, args.only), end="")
            return 0
        return run_study(study, args.only)
    except PieceFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (StudyError, ParamsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
