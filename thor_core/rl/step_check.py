"""Held-out step-level check: do the RL checkpoint's code steps pass more often than the start model's?

The training curve's step-level pass rate is measured on each step's own prefixes, which change with the
policy and the questions, a few dozen continuations per step: a noisy trend. This check measures the same
quantity on fixed prefixes, paired: the failed code calls of the *start* model's held-out answers (notebook
03's before/after check, none of the RL questions) are cut exactly as in training (``batch.step_prefixes``,
``batch.step_tasks``: the same L_suf, continuation budget and sampling temperature), and both models continue
each prefix ``step_check_k`` times with the same seeds. Reward: the training's (``batch.step_reward``: one
code block that exits cleanly and prints).

Tests: exact McNemar over the (prefix, sample) pairs, and a sign test over prefixes (a prefix counts as
better when the RL model passed more of its k continuations); the continuations of one prefix are
correlated, so the prefix-level test is the one to trust. Written to ``step_check.json`` in the run
folder, with the continuations in ``step-check-<tag>.jsonl``; a re-run with the same settings and weights
returns the written result (a check killed midway is redone whole: minutes).

Not covered: prefixes from the RL model's own failures (it fails on other calls; the start model's make the
comparison paired), or from the training questions.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from thor_core.backends import make_backend
from thor_core.engine.rollout import mix_seed, run_rollouts
from thor_core.files import write_json_atomic
from thor_core.models import model_fingerprint, resolve_model
from thor_core.record import read_jsonl, write_jsonl
from thor_core.rl import batch as rb
from thor_core.rl.config import RLParams
from thor_core.rl.trainer import rollout_configs
from thor_core.stats import mcnemar_exact, paired_outcomes, wilson_interval

RESULT = "step_check.json"


def check_params(p: RLParams, n: int, k: int, seed: int) -> RLParams:
    """The training's step-level settings with the check's cap (``n`` prefixes), ``k`` samples and seed."""
    return dataclasses.replace(p, max_step_prefixes=n, step_fallback=False, group_size=k, seed=seed)


def heldout_prefixes(records, q: RLParams) -> list[tuple[Any, int]]:
    """(record, failed call) pairs of held-out answers, chosen by the training's rule, at most ``q.max_step_prefixes``."""
    grouped = [dataclasses.replace(r, metadata={**r.metadata, "group": f"h/{r.question_id}"}) for r in records]
    return rb.step_prefixes(grouped, q, random.Random(mix_seed(q.seed, "step-check")))


def _settings(q: RLParams, models: dict[str, str], prefixes) -> dict[str, Any]:
    keys = ("suffix_tokens", "step_prefixes", "max_step_prefixes", "group_size", "seed", "temperature", "top_p",
            "step_max_new_tokens", "code_timeout_s")  # fmt: skip
    return {
        **{k: getattr(q, k) for k in keys},
        "models": models,
        "model_sha256": {tag: model_fingerprint(m) for tag, m in models.items()},
        "prefixes": [f"{r.question_id}/{r.metadata.get('sample', 0)}/{i}" for r, i in prefixes],
    }


def summarize(by_tag: dict[str, list], settings: dict[str, Any]) -> dict[str, Any]:
    """Pass rates with Wilson intervals, the pair-level McNemar test and the prefix-level sign test."""
    passed = {
        tag: {(r.metadata["group"], r.metadata["sample"]): bool(rb.step_reward(r)) for r in records}
        for tag, records in by_tag.items()
    }
    rates = {}
    for tag, outcomes in passed.items():
        hits, n = sum(outcomes.values()), len(outcomes)
        rates[tag] = {"passed": hits, "n": n, "rate": hits / n if n else None, "ci95": wilson_interval(hits, n)}
    first, second = passed
    per_prefix = {tag: Counter() for tag in passed}  # prefix -> continuations that passed
    for tag, outcomes in passed.items():
        for (group, _), ok in outcomes.items():
            per_prefix[tag][group] += ok
    groups = {group for group, _ in passed[first]}
    better = sum(per_prefix[second][g] > per_prefix[first][g] for g in groups)
    worse = sum(per_prefix[second][g] < per_prefix[first][g] for g in groups)
    return {
        "settings": settings,
        "labels": [first, second],
        "rates": rates,
        "pairs": paired_outcomes(passed[first], passed[second]),
        "prefixes": {
            "n": len(groups),
            "better": better,
            "worse": worse,
            "tied": len(groups) - better - worse,
            "p_value": mcnemar_exact(worse, better),
        },
    }


def step_check(
    p: RLParams, models: dict[str, str], heldout_records, out_dir, sandbox, n: int, k: int, seed: int
) -> dict[str, Any] | None:
    """Both ``models`` (tag -> model; first "before") continue the same held-out prefixes; ``step_check.json``.

    ``heldout_records``: the first model's held-out answers (``report.before_after``'s ``records``). None when
    they have no failed call.
    """
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    q = check_params(p, n, k, seed)
    prefixes = heldout_prefixes(heldout_records, q)
    if not prefixes:
        return None
    settings = _settings(q, models, prefixes)
    result_path = out_dir / RESULT
    if result_path.exists():
        old = json.loads(result_path.read_text())
        if old.get("settings") == settings:
            by_tag = {tag: read_jsonl(out_dir / f"step-check-{tag}.jsonl") for tag in models}
            return {**old, "records": by_tag}
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(next(iter(models.values())))))
    tasks = rb.step_tasks(prefixes, q, tokenizer)
    _, cfg = rollout_configs(q)
    by_tag, walls = {}, {}
    for tag, model in models.items():
        t0 = time.monotonic()
        with make_backend(p.backend, model) as backend:
            by_tag[tag] = run_rollouts(backend, sandbox, tasks, cfg, progress=False)
        walls[tag] = round(time.monotonic() - t0, 1)
        write_jsonl(by_tag[tag], out_dir / f"step-check-{tag}.jsonl")
    report = {**summarize(by_tag, settings), "wall_s": walls}
    write_json_atomic(result_path, report)
    return {**report, "records": by_tag}


def step_check_table(report: dict[str, Any]) -> str:
    """Markdown: each model's pass rate, then the pair-level and prefix-level tests."""
    first, second = report["labels"]
    cells = []
    for tag in (first, second):
        r = report["rates"][tag]
        lo, hi = r["ci95"]
        cells.append(f"{r['rate']:.1%} ({r['passed']}/{r['n']}) [{lo:.1%}, {hi:.1%}]")
    pairs, pre = report["pairs"], report["prefixes"]
    return "\n".join([
        f"| | {first} | {second} | paired test |",
        "|---|---|---|---|",
        f"| step-level pass rate | {cells[0]} | {cells[1]} | {pairs['only_first']} vs {pairs['only_second']} "
        f"discordant pairs, p = {pairs['p_value']:.3g} |",
        f"| prefixes ({pre['n']}) | | | {pre['better']} better, {pre['worse']} worse, {pre['tied']} tied; "
        f"sign test p = {pre['p_value']:.3g} |",
    ])  # fmt: skip
