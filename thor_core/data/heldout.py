"""Training and evaluation problems kept apart: a stage's training set, decontaminated; the problems each training
run records; and the one held-out rule (generated problems that none of the given training problems duplicate).

- ``training_set``: the problems a stage's ``problems`` setting names (``generated``, a set, a file, a mix:
  ``thor_core.data.benchmarks.load_problems``), with every question that an evaluation benchmark contaminates
  removed (``thor_core.data.decontam``: exact text or a shared 13-word run) and the report of what was removed.
  TIRGen and RL write it as ``decontamination.json`` beside ``problems.jsonl`` and print it in one line.
  Checked against (``decontamination_benchmarks``): the offline evaluation sets always, and the paper's six through
  the hub when the problems come from the benchmark registry (the paper-scale sets).
- ``find_overlap``: pairs of questions with equal normalised text (the held-out rule's test).
- ``write_problems`` / ``read_problems``: the ``problems.jsonl`` a training run records (TIRGen, RL).
- ``heldout_problems``: the held-out sets of the checks, described next.

Notebooks 02 (SFT's before/after check), 03 (RL's) and 04 (the ladder's ``heldout`` benchmark) all draw their held-out
set here, each excluding what its models were trained on: 02 the SFT dataset's questions and TIRGen's problems, 03 the
RL training problems, 04 the problems recorded in the chain's run folders (``heldout_exclude``: TIRGen's and RL's
``problems.jsonl``). Questions are compared by normalised text (``find_overlap``). The same seed gives the
same set wherever nothing is excluded, so the three checks share their problems (seed 9001 in every profile).

Not covered: near-duplicates in the held-out rule (the same problem with other numbers is a different problem here,
as it is for a model; generated problems share their templates' wording, so an n-gram rule would match them all).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from thor_core.data.benchmarks import HUB_BENCHMARKS, Problem, load_benchmark, load_problems, parse_sources
from thor_core.data.decontam import Reference, decontaminate, normalize_question
from thor_core.data.problems import LEVELS, generate_problems
from thor_core.files import iter_json_lines, repo_path

EVAL_BENCHMARKS = ("math500_mmath", "aime24", "aime25", "cnmo")  # the offline evaluation sets
# the paper's six evaluation sets (Table 1), through the hub: MATH500, AIME24, AIME25, AMC23, Minerva, OlympiadBench
PAPER_BENCHMARKS = ("math500", "aime24_hf", "aime25_full", "amc23", "minerva", "olympiadbench")
PROBLEMS_FILE = "problems.jsonl"


def decontamination_benchmarks(spec: str) -> tuple[str, ...]:
    """The evaluation sets a training set named by ``spec`` is checked against: the offline ones, and the paper's
    six when ``spec`` names a set of the benchmark registry (a machine that trains on those reaches the hub or holds
    its cache; generated problems and a user's own file are checked offline)."""
    if spec == "generated" or Path(spec).is_file():
        return EVAL_BENCHMARKS
    hub = any(s.name in HUB_BENCHMARKS for s in parse_sources(spec))
    return (*EVAL_BENCHMARKS, *PAPER_BENCHMARKS) if hub else EVAL_BENCHMARKS


def training_set(
    spec: str,
    n: int,
    seed: int,
    levels: Sequence[int] = LEVELS,
    kinds: Sequence[str] | None = None,
    against: Sequence[str] | Mapping[str, Sequence[Problem]] | None = None,
) -> tuple[list[Problem], dict[str, Any]]:
    """A stage's training problems without the ones an evaluation set contaminates, and the decontamination report.

    ``spec``: ``generated`` (``generate_problems(n, seed, levels, kinds)``) or what ``load_problems`` reads (a mix
    is drawn under ``seed``). ``against``: benchmark names, or name -> problems; default
    ``decontamination_benchmarks(spec)``. A set that cannot be loaded stops the run (``BenchmarkUnavailable``).
    """
    if spec == "generated":
        problems = generate_problems(n, seed, levels=levels, kinds=kinds)
    else:
        problems = load_problems(spec, n, seed)
    against = decontamination_benchmarks(spec) if against is None else against
    groups = against if isinstance(against, Mapping) else {name: load_benchmark(name) for name in against}
    return decontaminate(problems, Reference.build(groups))


def find_overlap(
    problems: Iterable[Problem], benchmarks: Iterable[str | Problem | Sequence[Problem]] = EVAL_BENCHMARKS
) -> list[tuple[str, str]]:
    """(problem id, benchmark problem id) pairs whose normalised questions are equal.

    ``benchmarks`` holds benchmark names (loaded with ``load_benchmark``),
    ``Problem`` objects, or lists of them.
    """
    reference: dict[str, str] = {}
    for item in benchmarks:
        group = load_benchmark(item) if isinstance(item, str) else ([item] if isinstance(item, Problem) else item)
        for p in group:
            reference.setdefault(normalize_question(p.question), p.id)
    return [(p.id, reference[key]) for p in problems if (key := normalize_question(p.question)) in reference]


def write_problems(problems: Sequence[Problem], folder: str | os.PathLike) -> None:
    """``<folder>/problems.jsonl``: the problems a training run used, so held-out sets can avoid them (atomic)."""
    folder = Path(folder)
    tmp = folder / f".{PROBLEMS_FILE}.tmp"
    tmp.write_text("".join(json.dumps(dataclasses.asdict(q), ensure_ascii=False) + "\n" for q in problems))
    os.replace(tmp, folder / PROBLEMS_FILE)


def read_problems(folder: str | os.PathLike) -> list[Problem]:
    """The problems :func:`write_problems` recorded in a run folder (TIRGen's and RL's write them)."""
    path = Path(folder) / PROBLEMS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {folder} a TIRGen or RL run folder (notebooks 01, 03)?")
    return [Problem(**row) for row in iter_json_lines(path)]


def heldout_problems(
    n: int, seed: int, exclude: Mapping[str, Sequence[Problem]] | None = None
) -> tuple[list[Problem], dict[str, Any]]:
    """The first ``n`` problems generated under ``seed`` that duplicate no problem in ``exclude`` (name -> problems),
    and a note for the report: seed, n, how many candidates were excluded, what they were checked against.

    ValueError when ``n`` cannot be reached (the training problems cover the held-out generator: change the seed).
    """
    exclude = dict(exclude or {})
    if n < 0:
        raise ValueError(f"heldout_n must be >= 0, got {n}")
    size = n + 20
    while True:
        candidates = generate_problems(size, seed=seed)  # prefix-stable: a larger draw starts with the smaller one
        clashes = {a for a, _ in find_overlap(candidates, list(exclude.values()))}
        kept = [c for c in candidates if c.id not in clashes][:n]
        if len(kept) == n:
            break
        if size >= 10 * n + 100:
            raise ValueError(
                f"only {len(kept)} of {size} problems under heldout_seed={seed} are free of the training problems "
                f"({', '.join(exclude)}); choose another heldout_seed"
            )
        size *= 2
    last = candidates.index(kept[-1]) if kept else -1
    excluded = sum(c.id in clashes for c in candidates[: last + 1])
    return kept, {"seed": seed, "n": n, "excluded": excluded, "checked_against": sorted(exclude)}


def recorded_problems(folders: Sequence[str | os.PathLike]) -> dict[str, list[Problem]]:
    """folder -> the problems its training run recorded (``problems.jsonl``), for the folders that hold one.

    A folder without the file (a stage that was not run, or a hub model) excludes nothing; the note of
    :func:`heldout_problems` lists the folders that did.
    """
    found = {}
    for folder in folders:
        try:
            found[str(folder)] = read_problems(repo_path(folder))
        except FileNotFoundError:
            continue
    return found
