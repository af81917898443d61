"""Decontamination: training questions checked against evaluation questions; the contaminated ones are removed and
reported.

The rule: a training question is contaminated by an evaluation question when

- **exact**: their normalised texts are equal (``normalize_question``: lower case; LaTeX spacing commands,
  punctuation and whitespace dropped), or
- **n-gram**: they share a run of ``NGRAM`` = 13 consecutive word tokens (``word_tokens``: lower-cased runs of
  letters or digits, after the same LaTeX clean-up), the rule of GPT-3's contamination study (Brown et al. 2020,
  appendix C). As there, an n-gram that more than ``BOILERPLATE`` = 10 of the checked training questions share is
  a stock phrase, not a copy, and does not count.

Why 13 words and not 8 (open-r1 decontaminates with 8-grams): competition problems repeat stock phrases of 8 to 12
words ("where m and n are relatively prime positive integers. Find m+n", "find the number of ordered pairs of
positive integers"); at 8 they flag unrelated questions, at 13 a shared run is a copied clause (docs/METHOD.md,
"Decontamination", has the measurement on the offline sets). Evaluation questions shorter than 13 words are covered
by the exact rule only.

Built once: ``Reference.build`` indexes every evaluation question's normalised text and hashed n-grams
(Python's ``hash`` of the word tuple: collisions among the few million n-grams of a run are vanishingly rare, and a
collision can only remove a question, never let one through); a check is one dict lookup per training n-gram.
Written by hand: the libraries we know of (``datasketch``, ``text-dedup``) estimate Jaccard similarity by MinHash,
which is not this rule.

Covered: the two rules, removal, the report (``decontaminate``, ``write_report``, ``report_line``).
Not covered: which evaluation sets a stage checks against and loading them (``thor_core.data.heldout``);
paraphrases that share no 13 consecutive words (reworded, other numbers), semantic near-duplicates (DeepMath's
authors also ran an LLM judge), answers.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thor_core.data.benchmarks import Problem
from thor_core.files import write_json_atomic

NGRAM = 13
BOILERPLATE = 10
REPORT_FILE = "decontamination.json"
_LATEX_SPACING = re.compile(r"\\(?:left|right|displaystyle|,|;|!|quad)")


def normalize_question(text: str) -> str:
    """Lower-case text with LaTeX spacing commands, punctuation and whitespace removed (the exact rule)."""
    return re.sub(r"[^a-z0-9]+", "", _LATEX_SPACING.sub("", text.lower()))


def word_tokens(text: str) -> list[str]:
    """Lower-cased runs of letters or digits, after the exact rule's LaTeX clean-up (the n-gram rule's words)."""
    return re.findall(r"[a-z0-9]+", _LATEX_SPACING.sub(" ", text.lower()))


def ngram_hashes(tokens: Sequence[str], n: int) -> list[int]:
    """Hashes of every run of ``n`` consecutive tokens, in order (none when there are fewer than ``n``)."""
    return list(map(hash, zip(*(tokens[i:] for i in range(n)))))


@dataclass(frozen=True)
class Hit:
    """Why a training question was removed: the rule, and the evaluation benchmark and question it matched."""

    rule: str  # "exact" or "ngram"
    benchmark: str
    match: str


@dataclass
class Reference:
    """Evaluation questions indexed once: normalised text and hashed n-grams -> (benchmark, question id)."""

    n: int
    sizes: dict[str, int] = field(default_factory=dict)
    exact: dict[str, tuple[str, str]] = field(default_factory=dict)
    grams: dict[int, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def build(cls, benchmarks: Mapping[str, Iterable[Problem]], n: int = NGRAM) -> Reference:
        """The index of ``benchmarks`` (name -> its questions); the first question to hold a key names it."""
        if n < 1:
            raise ValueError(f"n-gram length must be >= 1, got {n}")
        ref = cls(n)
        for name, problems in benchmarks.items():
            problems = list(problems)
            ref.sizes[name] = len(problems)
            for p in problems:
                ref.exact.setdefault(normalize_question(p.question), (name, p.id))
                for h in ngram_hashes(word_tokens(p.question), n):
                    ref.grams.setdefault(h, (name, p.id))
        return ref

    def hits(self, problems: Sequence[Problem], boilerplate: int = BOILERPLATE) -> dict[str, Hit]:
        """Training question id -> its ``Hit``, for the contaminated ones (exact first, then the first n-gram that
        at most ``boilerplate`` of ``problems`` share)."""
        found: dict[str, Hit] = {}
        shared: dict[str, list[int]] = {}
        for p in problems:
            if (key := normalize_question(p.question)) in self.exact:
                found[p.id] = Hit("exact", *self.exact[key])
            shared[p.id] = list(
                dict.fromkeys(h for h in ngram_hashes(word_tokens(p.question), self.n) if h in self.grams)
            )
        spread = Counter(h for grams in shared.values() for h in grams)
        for p in problems:
            first = next((h for h in shared[p.id] if spread[h] <= boilerplate), None)
            if p.id not in found and first is not None:
                found[p.id] = Hit("ngram", *self.grams[first])
        return found


def decontaminate(
    problems: Sequence[Problem], reference: Reference, boilerplate: int = BOILERPLATE
) -> tuple[list[Problem], dict[str, Any]]:
    """``problems`` without the contaminated ones, and the report: how many were checked against which benchmarks,
    how many each benchmark removed by which rule, and every removed id with what it matched."""
    hits = reference.hits(problems, boilerplate)
    kept = [p for p in problems if p.id not in hits]
    by_benchmark = {name: {"exact": 0, "ngram": 0} for name in reference.sizes}
    for hit in hits.values():
        by_benchmark[hit.benchmark][hit.rule] += 1
    report = {
        "rule": {
            "exact": "equal normalised text",
            "ngram": reference.n,
            "tokens": "lower-cased runs of letters or digits",
            "boilerplate": f"n-grams shared by more than {boilerplate} checked questions do not count",
        },
        "benchmarks": dict(reference.sizes),
        "checked": len(problems),
        "removed": len(hits),
        "kept": len(kept),
        "removed_by": by_benchmark,
        "removed_ids": [{"id": p.id, **vars(hits[p.id])} for p in problems if p.id in hits],
    }
    return kept, report


def write_report(report: Mapping[str, Any], folder: str | os.PathLike) -> Path:
    """``<folder>/decontamination.json`` (atomic), beside the run's ``problems.jsonl``."""
    path = Path(folder) / REPORT_FILE
    write_json_atomic(path, report)
    return path


def report_line(report: Mapping[str, Any]) -> str:
    """The report in one line, for a stage's log and notebook."""
    sets = report["benchmarks"]
    removed = [
        f"{name} {counts['exact']} exact + {counts['ngram']} {report['rule']['ngram']}-gram"
        for name, counts in report["removed_by"].items()
        if counts["exact"] or counts["ngram"]
    ]
    return (
        f"decontamination: {report['checked']} training questions checked against {len(sets)} evaluation sets "
        f"({', '.join(f'{k} {v}' for k, v in sets.items()) or 'none'}; exact text and "
        f"{report['rule']['ngram']}-word n-grams): {report['removed']} removed"
        + (f" ({'; '.join(removed)})" if removed else "")
    )
