"""The one held-out rule: generated problems that none of the given training problems duplicate.

Notebooks 02 (SFT's before/after check), 03 (RL's) and 04 (the ladder's ``heldout`` benchmark) all draw their held-out
set here, each excluding what its models were trained on: 02 the SFT dataset's questions and TIRGen's problems, 03 the
RL training problems, 04 the problems recorded in the chain's run folders (``heldout_exclude``: TIRGen's and RL's
``problems.jsonl``). Questions are compared by normalised text (``problems.find_overlap``). The same seed gives the
same set wherever nothing is excluded, so the three checks share their problems (seed 9001 in every profile).

Not covered: near-duplicates (the same problem with other numbers is a different problem here, as it is for a
model); overlap with hub benchmarks (generated problems are checked against the offline evaluation sets when drawn
for training, ``problems.assert_no_overlap``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from thor_core.data.benchmarks import Problem
from thor_core.data.problems import find_overlap, generate_problems, read_problems
from thor_core.files import repo_path


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
