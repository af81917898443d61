"""Choosing one answer out of N sampled trajectories of the same question.

Covered:

- ``best_of_n_exec``: THOR's self-rewarded best-of-N (paper section 2.4, the
  default selector). Each trajectory is scored by its execution pass rate, the
  fraction of its code calls that succeeded; the highest score wins. The tie-break
  is ours (the paper names none): majority vote of the answers among the tied
  trajectories (``majority_vote``'s rules: trajectories without an answer do not
  vote unless none has one; equal counts go to the answer seen first), then the
  first trajectory, in sampling order, with the winning answer.
- A trajectory without calls has no pass rate. By default it scores 0, the same
  as one whose calls all failed, so it ranks below any trajectory with a
  successful call: an answer that ran no code carries no execution evidence.
  ``no_call_score=1.0`` is the authors' released script, which scores it 1.0,
  tied with answers whose calls all succeeded (notebook 04's ``no_call_score``
  parameter; docs/METHOD.md, section 5, states both rules and the tie-break).
- ``majority_vote``: the baseline selector (self-consistency): the most
  frequent answer wins, ties go to the answer seen first; trajectories without
  an answer do not vote unless no trajectory has one.
- ``vote_key``: the string key answers are grouped by when voting (not
  ``grading.normalize_answer``, which wraps an answer for math-verify): spaces,
  ``\\left``/``\\right`` and ``\\!``/``\\,`` removed, ``\\dfrac``/``\\tfrac``
  -> ``\\frac``, a trailing ``.0``/``.00`` dropped from numbers, and one outer
  ``$...$``/``\\boxed{...}``/``\\text{...}`` wrapper removed.
- Optionally, answers are grouped through an equivalence function instead
  (``equivalent=thor_core.grading.answers_equivalent``): each answer joins the
  first earlier group whose representative it is equivalent to (N-1 checks
  at most per answer, each bounded by the grader's time limit).

Only ``Trajectory`` fields are read (``final_answer``, ``tool_calls``); kept
calls count, failed attempts that self-correction threw away do not.

Not covered: learned verifiers, weighting votes by pass rate, and grading the
chosen answer (records are graded before selection, ``thor_core.evaluation.runner``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from thor_core.record import Trajectory

Equivalent = Callable[[str, str], bool]

_DROP = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\ |\s+")
_TRAILING_ZERO = re.compile(r"(?<![\d.])(\d+)\.0+(?![\d.])")
_WRAPPERS = (("$", "$"), ("\\boxed{", "}"), ("\\text{", "}"), ("\\mathrm{", "}"))


def vote_key(answer: str | None) -> str | None:
    """The comparison key of an answer (None and empty stay None); see the module docstring."""
    if answer is None:
        return None
    text = _DROP.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for left, right in _WRAPPERS:
        if text.startswith(left) and text.endswith(right) and len(text) > len(left) + len(right):
            inner = text[len(left) : -len(right)]
            if _balanced(inner):
                text = inner
    text = _TRAILING_ZERO.sub(r"\1", text)
    return text or None


def _balanced(text: str) -> bool:
    depth = 0
    for c in text:
        depth += (c == "{") - (c == "}")
        if depth < 0:
            return False
    return depth == 0


def exec_pass_rate(record: Trajectory) -> float | None:
    """Succeeded calls / calls of ``record``; None when it made no calls."""
    if not record.tool_calls:
        return None
    return sum(c.success for c in record.tool_calls) / len(record.tool_calls)


def answer_groups(answers: Sequence[str | None], equivalent: Equivalent | None = None) -> list[list[int]]:
    """Indices of ``answers`` grouped by equal answer (normalised, or by ``equivalent``), in order of first appearance.

    Missing answers (None or empty) form no group.
    """
    groups: list[list[int]] = []
    keys: list[str] = []
    for i, answer in enumerate(answers):
        key = vote_key(answer)
        if key is None:
            continue
        for group, other in zip(groups, keys, strict=True):
            if key == other or (equivalent is not None and equivalent(answers[group[0]], answers[i])):
                group.append(i)
                break
        else:
            groups.append([i])
            keys.append(key)
    return groups


def majority_index(records: Sequence[Trajectory], equivalent: Equivalent | None = None) -> int:
    """Index of the record majority vote picks (the first record of the winning answer)."""
    if not records:
        raise ValueError("majority vote needs at least one trajectory")
    groups = answer_groups([r.final_answer for r in records], equivalent)
    if not groups:
        return 0
    best = max(groups, key=len)  # max keeps the first of equal-sized groups
    return best[0]


def majority_vote(records: Sequence[Trajectory], equivalent: Equivalent | None = None) -> Trajectory:
    """The record whose answer is the most frequent (ties: the answer seen first)."""
    return records[majority_index(records, equivalent)]


def exec_score(record: Trajectory, no_call_score: float = 0.0) -> float:
    """The selection score: the execution pass rate, ``no_call_score`` for a record without calls."""
    rate = exec_pass_rate(record)
    return no_call_score if rate is None else rate


def best_of_n_exec_index(
    records: Sequence[Trajectory], equivalent: Equivalent | None = None, *, no_call_score: float = 0.0
) -> int:
    """Index of the record best-of-N by execution pass rate picks (see the module docstring).

    ``no_call_score``: the score of a record without calls; 0 (ours, no execution evidence) or 1.0 (the
    authors' script).
    """
    if not records:
        raise ValueError("best-of-N needs at least one trajectory")
    scores = [exec_score(r, no_call_score) for r in records]
    top = max(scores)
    tied = [i for i, s in enumerate(scores) if s == top]
    return tied[majority_index([records[i] for i in tied], equivalent)]


def best_of_n_exec(
    records: Sequence[Trajectory], equivalent: Equivalent | None = None, *, no_call_score: float = 0.0
) -> Trajectory:
    """The record with the highest execution pass rate (ties: majority vote among them, then the first)."""
    return records[best_of_n_exec_index(records, equivalent, no_call_score=no_call_score)]


SELECTORS: dict[str, Callable[[Sequence[Trajectory], Equivalent | None], int]] = {
    "exec_pass_rate": best_of_n_exec_index,
    "majority_vote": majority_index,
}
