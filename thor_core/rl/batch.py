"""From rollouts to training rows: episode groups, step-level prefixes, filters, advantages, tensors.

A ``Row`` is one sampled continuation the loss sees: its record (ids, mask,
engine log-probs), its group, its level (0 episode, 1 step), its reward and
``loss_start``, the completion index before which tokens are given context
(a step-level row's prefix). The trained tokens of a row are those with
``mask == 1`` at or after ``loss_start``: prompts, prefixes and inserted
```output blocks never train.

Episode level (docs/METHOD.md, "Hierarchical RL"): G rollouts per question, reward 1/0
from grading the final boxed answer; rollouts are dropped from their group by
the filters (failed code, the paper's rule; and the authors' optional length
and boxed-near-the-end rules); a group with fewer than ``min_group_survival``
of its rollouts left is dropped. Step level: failed calls become prefixes
(cut before the failed ```python block, minus its last ``suffix_tokens``,
never into an inserted output block); G continuations regenerate the suffix
and exactly one code block (``RolloutConfig.stop_after_code``); reward 1 when
that block ran successfully by the kit's rule (clean exit and printed
output). Every group, of either level, is then dropped when its rewards all
agree (dynamic filtering: no advantage, no gradient) and its advantages are
computed on the whole group, before any sharding across processes.

Infrastructure failures (``thor_core.rl.trainer``'s re-run rule marks a record's
``metadata["infra_failure"]`` with the index of the call the sandbox, not the
model, failed): such a rollout or continuation leaves its group (reason
``infra``), never scored 0, and its failed call is no step-level prefix; a group
of either level left with fewer than 2 rows or below ``min_group_survival`` is
dropped (``groups_dropped/survival``, ``step_groups_dropped/survival``). Each
record that trains nothing says why in ``metadata["rl_dropped"]`` (a filter,
``survival`` or ``no_spread``); a trained row's record holds its
``metadata["advantage"]``.

Not covered: running the rollouts (``thor_core.rl.trainer``), the loss
(``thor_core.rl.losses``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace

import torch

from thor_core.engine.rollout import RolloutTask, mix_seed
from thor_core.record import Trajectory
from thor_core.rl.config import RLParams
from thor_core.rl.losses import group_advantages

EPISODE, STEP = 0, 1
ROW_FATE = ("rl_dropped", "infra_failure", "advantage")  # a record's own, never inherited by its continuations
LEVEL_NAMES = {EPISODE: "episode", STEP: "step"}


@dataclass
class Row:
    record: Trajectory
    group: str
    level: int
    reward: float
    loss_start: int = 0
    advantage: float = 0.0

    def trained(self) -> list[int]:
        """1 per completion token that carries gradient."""
        return [int(m == 1 and i >= self.loss_start) for i, m in enumerate(self.record.mask)]


# ------------------------------------------------------------------ episode level


def drop_reason(record: Trajectory, p: RLParams, tokenizer) -> str | None:
    """Why ``record`` leaves its episode group (None: it stays)."""
    if infra_failed(record):
        return "infra"
    if p.exclude_failed_code and record.n_failed_calls:
        return "failed_code"
    if p.min_response_tokens and record.n_policy_tokens < p.min_response_tokens:
        return "short"
    if p.boxed_within_last:
        tail = tokenizer.decode(record.completion_ids[-p.boxed_within_last :], skip_special_tokens=True)
        if "\\boxed{" not in tail:
            return "no_boxed_at_end"
    return None


def infra_failed(record: Trajectory) -> bool:
    """Whether the sandbox, not the model, failed one of the record's calls (the trainer's re-run rule)."""
    return record.metadata.get("infra_failure") is not None


def episode_rows(records: list[Trajectory], rewards: list[float], p: RLParams, tokenizer) -> tuple[list[Row], Counter]:
    """Rows of the episode groups (``metadata['group']``) that survive the filters (not yet spread-filtered)."""
    counts: Counter = Counter()
    rows = []
    for record, reward in zip(records, rewards):
        if reason := drop_reason(record, p, tokenizer):
            counts[f"rollouts_dropped/{reason}"] += 1
            record.metadata["rl_dropped"] = reason
            continue
        rows.append(Row(record, record.metadata["group"], EPISODE, reward))
    return surviving(rows, Counter(r.metadata["group"] for r in records), p, counts, "groups_dropped/survival"), counts


def surviving(rows: list[Row], sizes: Counter, p: RLParams, counts: Counter, key: str) -> list[Row]:
    """The rows of the groups left with at least 2 rows and ``min_group_survival`` of their ``sizes`` sampled."""
    kept = Counter(r.group for r in rows)
    small = {g for g, n in sizes.items() if kept[g] < max(2, p.min_group_survival * n)}
    if small:
        counts[key] += len(small)
    for row in rows:
        if row.group in small:
            row.record.metadata["rl_dropped"] = "survival"
    return [r for r in rows if r.group not in small]


# ------------------------------------------------------------------ step level


def cut_point(record: Trajectory, call_index: int, suffix_tokens: int) -> int:
    """Completion index of the step-level prefix's end: ``suffix_tokens`` before the call's code block.

    Never earlier than the end of the previous call's output block (an inserted block is not regenerated).
    """
    floor = record.tool_calls[call_index - 1].output_span[1] if call_index else 0
    return max(floor, record.tool_calls[call_index].code_span[0] - suffix_tokens)


def prefix_of(record: Trajectory, cut: int, tokenizer) -> Trajectory:
    """The record's first ``cut`` completion tokens as a prefix the engine continues (calls before it kept)."""
    ids = record.completion_ids[:cut]
    return replace(
        record,
        completion_ids=ids,
        mask=record.mask[:cut],
        logprobs=record.logprobs[:cut] if record.logprobs is not None else None,
        trainer_logprobs=None,  # the audit of a trained record is its own
        entropy=None,
        tool_calls=[c for c in record.tool_calls if c.output_span[1] <= cut],
        corrections=[],
        completion_text=tokenizer.decode(ids, skip_special_tokens=False),
        final_answer=None,
        correct=None,
        finish_reason="",
        metadata=dict(record.metadata),
    )


def step_prefixes(records: list[Trajectory], p: RLParams, rng: random.Random) -> list[tuple[Trajectory, int]]:
    """(record, failed call index) pairs that become step-level prefixes.

    ``step_prefixes``: the first failed call per rollout (authors' code) or every failed call (paper). Capped at
    ``max_step_prefixes`` (default: the number of distinct questions, authors), drawn at random beyond the cap.
    With no failed call and ``step_fallback``, one random rollout's first call (authors).
    """
    picks = []
    for record in records:
        infra = record.metadata.get("infra_failure")
        failed = [i for i, c in enumerate(record.tool_calls) if not c.success and i != infra]
        picks += [(record, i) for i in (failed[:1] if p.step_prefixes == "per_rollout" else failed)]
    if not picks and p.step_fallback:
        with_code = [r for r in records if r.tool_calls]
        picks = [(rng.choice(with_code), 0)] if with_code else []
    cap = p.max_step_prefixes if p.max_step_prefixes is not None else len({r.question_id for r in records})
    if len(picks) > cap:
        picks = [picks[i] for i in sorted(rng.sample(range(len(picks)), cap))]
    return picks


def step_tasks(prefixes: list[tuple[Trajectory, int]], p: RLParams, tokenizer) -> list[RolloutTask]:
    """G continuation tasks per prefix; each prefix is its own group ``s/<episode group>/<sample>/<call>``."""
    tasks = []
    for record, call_index in prefixes:
        cut = cut_point(record, call_index, p.suffix_tokens)
        prefix = prefix_of(record, cut, tokenizer)
        group = f"s/{record.metadata['group']}/{record.metadata['sample']}/{call_index}"
        for k in range(p.group_size):
            tasks.append(
                RolloutTask(
                    question_id=record.question_id,
                    question=record.question,
                    gold_answer=record.gold_answer,
                    prompt_ids=record.prompt_ids,
                    prefix=prefix,
                    seed=mix_seed(p.seed, "step", group, k),
                    max_new_tokens=p.step_max_new_tokens,
                    metadata={
                        **{k: v for k, v in record.metadata.items() if k not in ROW_FATE},
                        "group": group,
                        "rl_level": "step",
                        "loss_start": cut,
                        "sample": k,
                        "prefix_calls": len(prefix.tool_calls),
                        "from_call": call_index,
                        "parent": f"{record.metadata['group']}/{record.metadata['sample']}",
                    },
                )
            )
    return tasks


def step_reward(record: Trajectory) -> float:
    """1 when the continuation wrote exactly one code block and it ran successfully (clean exit, printed)."""
    new_calls = record.tool_calls[record.metadata["prefix_calls"] :]
    return float(record.finish_reason == "code_executed" and len(new_calls) == 1 and new_calls[0].success)


def step_rows(records: list[Trajectory]) -> list[Row]:
    return [Row(r, r.metadata["group"], STEP, step_reward(r), loss_start=r.metadata["loss_start"]) for r in records]


def step_level_rows(records: list[Trajectory], p: RLParams) -> tuple[list[Row], Counter]:
    """Rows of the step-level groups: infrastructure failures out, groups then too small dropped."""
    counts: Counter = Counter()
    for r in records:
        if infra_failed(r):
            counts["rollouts_dropped/infra"] += 1
            r.metadata["rl_dropped"] = "infra"
    rows = step_rows([r for r in records if not infra_failed(r)])
    sizes = Counter(r.metadata["group"] for r in records)
    return surviving(rows, sizes, p, counts, "step_groups_dropped/survival"), counts


# ------------------------------------------------------------------ both levels


def groups_with_spread(rows: list[Row]) -> set[str]:
    """Groups whose rewards do not all agree (the only ones with an advantage)."""
    rewards: dict[str, set[float]] = {}
    for row in rows:
        rewards.setdefault(row.group, set()).add(row.reward)
    return {g for g, r in rewards.items() if len(r) > 1}


def with_advantages(rows: list[Row], eps: float = 1e-6) -> tuple[list[Row], Counter]:
    """Drop groups whose rewards all agree (per level counted), then set each row's group advantage."""
    counts: Counter = Counter()
    by_group: dict[str, list[Row]] = {}
    for row in rows:
        by_group.setdefault(row.group, []).append(row)
    kept, spread = [], groups_with_spread(rows)
    for name, group in by_group.items():
        level = LEVEL_NAMES[group[0].level]
        if name not in spread:
            counts[f"{level}_groups_dropped/no_spread"] += 1
            for row in group:
                row.record.metadata["rl_dropped"] = "no_spread"
            continue
        counts[f"{level}_groups_kept"] += 1
        kept += group
    if not kept:
        return [], counts
    ids = {g: i for i, g in enumerate(dict.fromkeys(r.group for r in kept))}
    adv = group_advantages(
        torch.tensor([r.reward for r in kept]), torch.tensor([ids[r.group] for r in kept]), eps
    ).tolist()
    for row, a in zip(kept, adv):
        row.record.metadata["advantage"] = a
    return [replace(r, advantage=a) for r, a in zip(kept, adv)], counts


def collate(rows: list[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """Tensors of a micro-batch: prompts left-padded, completions right-padded (TRL's layout).

    ``input_ids``/``attention_mask``/``position_ids`` [B, P + C]; per completion token [B, C]: ``trained``
    (loss mask), ``engine_logp`` (the rollout engine's log-prob, NaN where it gave none); per row:
    ``advantages``, ``levels``.
    """
    P = max(len(r.record.prompt_ids) for r in rows)
    C = max(len(r.record.completion_ids) for r in rows)
    ids = torch.full((len(rows), P + C), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), P + C), dtype=torch.long)
    trained = torch.zeros((len(rows), C))
    engine = torch.full((len(rows), C), float("nan"))
    for i, row in enumerate(rows):
        prompt, completion = row.record.prompt_ids, row.record.completion_ids
        ids[i, P - len(prompt) : P] = torch.tensor(prompt)
        ids[i, P : P + len(completion)] = torch.tensor(completion, dtype=torch.long)
        attn[i, P - len(prompt) : P + len(completion)] = 1
        trained[i, : len(completion)] = torch.tensor(row.trained(), dtype=torch.float)
        if row.record.logprobs is not None:
            engine[i, : len(completion)] = torch.tensor([float("nan") if x is None else x for x in row.record.logprobs])
    return {
        "input_ids": ids,
        "attention_mask": attn,
        "position_ids": (attn.cumsum(dim=1) - 1).clamp(min=0),
        "trained": trained,
        "engine_logp": engine,
        "advantages": torch.tensor([r.advantage for r in rows], dtype=torch.float),
        "levels": torch.tensor([r.level for r in rows], dtype=torch.long),
    }
