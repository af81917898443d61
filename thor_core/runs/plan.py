"""The compute plan of a profile: rollouts, generated tokens and optimizer steps per stage, read from its YAML files.

``python -m thor_core.runs plan --profile gpu-1.5b`` prints it (docs/METHOD.md, "Compute plan", holds the printed
tables of the gpu profiles). Every number is computed from the profile's settings by the pure functions below, so the
plan follows the profiles as they change:

- **01 TIRGen** (``tirgen_plan``): the CoT pre-filter's samples (``n_problems x cot_filter_k``), the actor's attempts
  (``n_problems x k``, every problem surviving the pre-filter at most), and the critic's rewrites (at most one per
  actor step, ``max_steps`` steps, ``1 + critic_retries`` tries), each bounded by its token budget.
- **02 SFT** (``sft_plan``): optimizer steps ``ceil(examples x epochs / global_batch_size)`` (``max_steps`` caps
  them). TIRGen keeps at most one sample per question, so the profile's 01 ``n_problems`` bounds the examples; the
  expected count is the paper's cold-start set (``PAPER_SFT_EXAMPLES``). Plus the before/after check's answers.
- **03 RL** (``rl_plan``): ``steps x questions_per_step x group_size`` episode rollouts (refill rounds can sample up
  to ``1 + max_refill_rounds`` times that), step-level continuations (at most one prefix per question of a round,
  ``group_size`` each), ``steps x updates_per_batch`` optimizer steps, and notebook 03's checks.
- **04 evaluation** (``rungs_plan``, when the profile has one): rungs x variants x problems x k answers; a
  benchmark without ``limit`` counts at its size from ``BENCHMARK_SIZES``.
- GPUs: what the profile's header comment states (``stated_gpus``), and the authors' count where the docs know it
  (``AUTHORS_GPUS``: they do not).

A "token" bound is the completion budget (``max_new_tokens``: sampled plus inserted tool-output tokens) times the
rollouts; the expected column holds only what a document records, never a guess.

Not covered: wall time and memory (no gpu profile has run yet: docs/BENCHMARKS.md, "GPU check"), notebook 05 (it
reads the others' records and generates nothing).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from thor_core.evaluation.before_after import CheckParams
from thor_core.evaluation.rungs import RungsParams
from thor_core.params import PARAMS, ParamsError, read_yaml_mapping, split_params
from thor_core.rl.config import NOTEBOOK_SCHEMAS as RL_SCHEMAS
from thor_core.rl.config import RLNotebook, RLParams
from thor_core.sft.config import SFTNotebook, SFTParams
from thor_core.tirgen.config import TIRGenParams
from thor_core.tirgen.config import load_params as load_tirgen

#: the paper's cold-start SFT set (§2.2: 29,217 samples from DAPO-17k, DeepMath-103k and DeepScaleR-40k)
PAPER_SFT_EXAMPLES = 29_217
#: GPUs the authors trained each stage on: neither the paper nor the released scripts say (docs/METHOD.md)
AUTHORS_GPUS: dict[str, int | None] = {
    "01_tirgen": None,
    "02_sft": None,
    "03_rl": None,
    "04_correction_inference": None,
}
#: problems per benchmark name of ``thor_core.data.benchmarks`` (offline: its docstring's counts; hub: the sets'
#: published sizes), for a notebook-04 profile whose ``limit`` does not cap them
BENCHMARK_SIZES = {"math500_mmath": 311, "aime24": 30, "aime25": 15, "cnmo": 18, "math500": 500, "aime24_hf": 30,
                   "aime25_full": 30, "amc23": 40, "minerva": 272, "olympiadbench": 675}  # fmt: skip
STAGES = ("01_tirgen", "02_sft", "03_rl", "04_correction_inference")


@dataclass(frozen=True)
class Line:
    """One row of the plan: one kind of work of one stage."""

    stage: str
    what: str
    rollouts: int  # generated trajectories (an upper bound where the note says so)
    tokens_max: int  # rollouts x their completion budget
    optimizer_steps: int | None = None  # None: not an optimizer's work
    expected: str = ""  # what a document records, with its source
    note: str = ""


# ------------------------------------------------------------------ the stages (pure)


def tirgen_plan(p: TIRGenParams) -> list[Line]:
    """CoT pre-filter, actor attempts and critic rewrites of a TIRGen run."""
    lines = []
    if p.cot_filter_k:
        n = p.n_problems * p.cot_filter_k
        lines.append(Line("01_tirgen", "CoT pre-filter (actor)", n, n * p.cot_max_new_tokens))
    attempts = p.n_problems * p.k
    lines.append(Line("01_tirgen", "attempts (actor)", attempts, attempts * p.max_new_tokens,
                      note="at most: problems CoT already solves are not attempted"))  # fmt: skip
    rewrites = attempts * p.max_steps * (1 + p.critic_retries)
    lines.append(Line("01_tirgen", f"critic rewrites ({p.critic_model or 'the actor'})", rewrites,
                      rewrites * p.critic_max_new_tokens, note="at most one per actor step"))  # fmt: skip
    return lines


def check_lines(stage: str, check: CheckParams, models: int = 2) -> list[Line]:
    """The held-out before/after check of notebooks 02 and 03: ``models`` models x heldout_n x eval_k answers."""
    n = models * check.heldout_n * check.eval_k
    return [Line(stage, "before/after check", n, n * check.eval_max_new_tokens)] if n else []


def sft_steps(p: SFTParams, examples: int) -> int:
    """Optimizer steps of an SFT run on ``examples`` examples (``max_steps`` caps them)."""
    steps = math.ceil(examples * p.num_train_epochs / p.global_batch_size)
    return min(steps, p.max_steps) if p.max_steps > 0 else steps


def sft_plan(p: SFTParams, check: CheckParams, examples_max: int | None = None) -> list[Line]:
    """SFT's optimizer steps for at most ``examples_max`` examples (None: not known), the paper's count beside
    them, and the check."""
    expected = f"{sft_steps(p, PAPER_SFT_EXAMPLES):,} on the paper's {PAPER_SFT_EXAMPLES:,} samples"
    note = f"<= {examples_max:,} examples (one per 01 question) of <= {p.max_length} tokens" if examples_max else ""
    steps = sft_steps(p, examples_max) if examples_max else None
    return [Line("02_sft", "fine-tune", 0, 0, steps, expected, note), *check_lines("02_sft", check)]


def rl_plan(p: RLParams, check: CheckParams, nb: RLNotebook) -> list[Line]:
    """Episode rollouts, step-level continuations, optimizer steps and the checks of an RL run."""
    rounds = 1 + p.max_refill_rounds
    episodes = p.steps * p.questions_per_step * p.group_size
    prefixes = p.max_step_prefixes if p.max_step_prefixes is not None else p.questions_per_step
    lines = [
        Line("03_rl", "episode rollouts", episodes * rounds, episodes * rounds * p.max_new_tokens,
             p.steps * p.updates_per_batch, expected=f"{episodes:,} rollouts without refill rounds",
             note=f"at most {rounds} sampling rounds per step; updates per rollout round: {p.updates_per_batch}"),
    ]  # fmt: skip
    if p.mode == "thor":
        steps = p.steps * rounds * prefixes * p.group_size
        lines.append(Line("03_rl", "step-level continuations", steps,
                          steps * (p.max_new_tokens + p.step_max_new_tokens),
                          note=f"at most {prefixes} prefixes per round; the prefix counts against the budget"))  # fmt: skip
    lines += check_lines("03_rl", check)
    if nb.step_check_n and check.heldout_n and p.tools:  # prefixes: failed calls of the check's start-model answers
        n = 2 * nb.step_check_n * nb.step_check_k
        lines.append(Line("03_rl", "step-level check", n, n * (p.max_new_tokens + p.step_max_new_tokens)))
    return lines


def rungs_plan(p: RungsParams) -> list[Line]:
    """Notebook 04's answers: every rung's variants (CoT, TIR, TIR with self-correction) on every benchmark, one
    line (each variant answers the same problems k times)."""
    answers = sum(benchmark_size(name, p) for name in p.benchmarks) * p.k
    runs = [f"{rung} {mode}" + ("-sc" if sc else "") for rung in p.rungs for mode, sc in p.variants(rung)]
    note = f"{answers:,} answers per run; the -sc runs retry failed calls up to {p.max_corrections} times within the budget"
    what = f"{len(runs)} runs: {', '.join(runs)}"
    return [
        Line("04_correction_inference", what, answers * len(runs), answers * len(runs) * p.max_new_tokens, note=note)
    ]


def benchmark_size(name: str, p: RungsParams) -> int:
    """Problems notebook 04 takes from one benchmark: its size (``heldout``: ``heldout_n``) capped by ``limit``."""
    size = p.heldout_n if name == "heldout" else BENCHMARK_SIZES.get(name)
    if size is None:
        if p.limit is None:
            raise ValueError(f"no known size for benchmark {name!r}: set limit, or add it to BENCHMARK_SIZES")
        return p.limit
    return size if p.limit is None else min(size, p.limit)


def stated_gpus(header: str) -> int | None:
    """The GPU count a profile's header comment states ("one node of 8 GPUs", "One 80 GB GPU"), else None."""
    words = {"one": 1, "two": 2, "four": 4, "eight": 8}
    match = re.search(r"\b(\d+|one|two|four|eight) (?:\d+ GB )?GPUs?\b", header, re.IGNORECASE)
    if match is None:
        return None
    count = match.group(1).lower()
    return int(count) if count.isdigit() else words[count]


# ------------------------------------------------------------------ a profile


def header_comment(path: Path) -> str:
    """The comment lines at the top of a YAML file, without their ``#``."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def stage_plan(stage: str, path: Path, sft_examples_max: int | None = None) -> list[Line]:
    """The lines of one profile file (``stage``: its notebook's stem; ``sft_examples_max``: for 02, the 01 profile's
    question count)."""
    values, source = read_yaml_mapping(path), str(path)
    if stage == "01_tirgen":
        return tirgen_plan(load_tirgen(path))
    if stage == "02_sft":
        sft, check, _ = split_params((SFTParams, CheckParams, SFTNotebook), values, source)
        return sft_plan(sft, check, sft_examples_max)
    if stage == "03_rl":
        return rl_plan(*split_params(RL_SCHEMAS, values, source))
    if stage == "04_correction_inference":
        return rungs_plan(split_params((RungsParams,), values, source)[0])
    raise ValueError(f"no plan for stage {stage!r}; known: {', '.join(STAGES)}")


def profile_plan(profile: str, params_root: Path = PARAMS) -> list[tuple[str, list[Line], int | None]]:
    """(file stem, lines, GPUs its header states) for each file of ``STAGES`` the profile has, in order; a stage's
    variants (``03_rl-cot.yaml``) follow it."""
    folder = params_root / profile
    if not folder.is_dir():
        known = sorted(p.name for p in params_root.iterdir() if p.is_dir())
        raise FileNotFoundError(f"no profile {profile!r} in {params_root}; available: {', '.join(known)}")
    out, questions = [], None
    for stage in STAGES:
        for path in [folder / f"{stage}.yaml", *sorted(folder.glob(f"{stage}-*.yaml"))]:
            if path.is_file():
                out.append((path.stem, stage_plan(stage, path, questions), stated_gpus(header_comment(path))))
                if path.stem == "01_tirgen":
                    questions = load_tirgen(path).n_problems
    if not out:
        raise FileNotFoundError(f"profile {profile!r} has none of {', '.join(STAGES)}")
    return out


def _count(n: int | None) -> str:
    return "-" if not n else f"{n:,}"


def plan_table(plan: Sequence[tuple[str, list[Line], int | None]]) -> str:
    """The plan as one Markdown table."""
    rows = ["| stage | work | rollouts | completion tokens (at most) | optimizer steps | expected | GPUs (header / authors) | note |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for stage, lines, gpus in plan:
        authors = AUTHORS_GPUS.get(stage.split("-")[0])
        gpu_cell = f"{gpus if gpus is not None else 'not stated'} / {authors if authors is not None else 'unknown'}"
        for i, line in enumerate(lines):
            rows.append(
                f"| {stage if i == 0 else ''} | {line.what} | {_count(line.rollouts)} | {_count(line.tokens_max)} | "
                f"{_count(line.optimizer_steps)} | {line.expected} | {gpu_cell if i == 0 else ''} | {line.note} |"
            )
    totals = [line for _, lines, _ in plan for line in lines]
    rows.append(f"| total | | {_count(sum(x.rollouts for x in totals))} | {_count(sum(x.tokens_max for x in totals))} | "
                f"{_count(sum(x.optimizer_steps or 0 for x in totals))} | | | |")  # fmt: skip
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m thor_core.runs plan --profile gpu-1.5b [--profile gpu-7b ...]``."""
    ap = argparse.ArgumentParser(
        prog="python -m thor_core.runs plan",
        description="Print a profile's compute plan: rollouts, completion tokens and optimizer steps per stage.",
    )
    ap.add_argument("--profile", action="append", required=True, help="params/<profile>/ (repeat for several)")
    args = ap.parse_args(argv)
    for profile in args.profile:
        try:
            plan = profile_plan(profile)
        except (FileNotFoundError, ValueError, ParamsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"### {profile}\n\n{plan_table(plan)}")
    return 0
