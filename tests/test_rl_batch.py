"""From rollouts to rows (thor_core.rl.batch): filters, step-level prefixes, advantages, tensors."""

import random

import pytest
import torch
from rl_scripted import trajectory_from_pieces

from thor_core.rl import batch as rb
from thor_core.rl.config import RLParams


def _record(tok, pieces, qid="q", group="e/0/0", sample=0, answer=None):
    """A trajectory from (text, kind) pieces (``rl_scripted.trajectory_from_pieces``) in episode group ``group``."""
    record = trajectory_from_pieces(tok, pieces, question_id=qid, metadata={"group": group, "sample": sample})
    if answer:
        record.final_answer = answer
    return record


@pytest.fixture
def failed(qwen_tokenizer):
    return _record(
        qwen_tokenizer,
        [("First we set things up carefully and think.\n", "policy"), ("```python\nprint(1)\n```\n", "ok"),
         ("```output\n1\n```\n", "output"), ("Now the second part of the reasoning goes here.\n", "policy"),
         ("```python\nprint(x)\n```\n", "fail"), ("```output\nNameError\n```\n", "output")],
    )  # fmt: skip


def test_cut_point_takes_suffix_but_never_enters_an_output_block(failed):
    second = failed.tool_calls[1]
    assert rb.cut_point(failed, 1, 5) == second.code_span[0] - 5
    assert rb.cut_point(failed, 1, 10_000) == failed.tool_calls[0].output_span[1]  # floor: previous output's end
    assert rb.cut_point(failed, 0, 10_000) == 0


def test_prefix_keeps_only_calls_before_the_cut(failed, qwen_tokenizer):
    cut = rb.cut_point(failed, 1, 3)
    prefix = rb.prefix_of(failed, cut, qwen_tokenizer)
    assert prefix.completion_ids == failed.completion_ids[:cut] and len(prefix.mask) == cut
    assert [c.code for c in prefix.tool_calls] == [failed.tool_calls[0].code]
    assert prefix.completion_text == qwen_tokenizer.decode(failed.completion_ids[:cut])
    assert "print(x)" not in prefix.completion_text


def test_step_prefixes_per_rollout_every_call_cap_and_fallback(qwen_tokenizer, failed):
    two_fails = _record(
        qwen_tokenizer,
        [("a\n", "policy"), ("```python\nprint(y)\n```\n", "fail"), ("```output\nE\n```\n", "output"),
         ("b\n", "policy"), ("```python\nprint(z)\n```\n", "fail"), ("```output\nE\n```\n", "output")],
        qid="r",
    )  # fmt: skip
    ok = _record(
        qwen_tokenizer, [("c\n", "policy"), ("```python\nprint(2)\n```\n", "ok"), ("```output\n2\n```\n", "output")]
    )
    rng = random.Random(0)
    per = rb.step_prefixes([failed, two_fails, ok], RLParams(step_prefixes="per_rollout"), rng)
    assert [(r.question_id, i) for r, i in per] == [("q", 1), ("r", 0)]
    every = rb.step_prefixes([failed, two_fails], RLParams(step_prefixes="every_call", max_step_prefixes=9), rng)
    assert [(r.question_id, i) for r, i in every] == [("q", 1), ("r", 0), ("r", 1)]
    assert len(rb.step_prefixes([failed, two_fails], RLParams(step_prefixes="every_call"), rng)) == 2  # cap: questions
    assert rb.step_prefixes([ok], RLParams(), rng) == [(ok, 0)]  # authors' fallback
    assert rb.step_prefixes([ok], RLParams(step_fallback=False), rng) == []


def test_step_tasks_and_rows_train_only_after_the_prefix(failed, qwen_tokenizer):
    p = RLParams(group_size=3, suffix_tokens=4)
    tasks = rb.step_tasks([(failed, 1)], p, qwen_tokenizer)
    assert len(tasks) == 3 and len({t.seed for t in tasks}) == 3
    cut = tasks[0].metadata["loss_start"]
    assert len(tasks[0].prefix.completion_ids) == cut
    done = _record(
        qwen_tokenizer,
        [(qwen_tokenizer.decode(failed.completion_ids[:cut]), "policy"), ("```python\nprint(5)\n```\n", "ok"),
         ("```output\n5\n```\n", "output")],
    )  # fmt: skip
    done.finish_reason = "code_executed"
    done.metadata.update(tasks[0].metadata)
    done.metadata["prefix_calls"] = len(done.tool_calls) - 1
    assert rb.step_reward(done) == 1.0
    row = rb.step_rows([done])[0]
    trained = row.trained()
    assert sum(trained[: row.loss_start]) == 0
    out_start, out_end = done.tool_calls[-1].output_span
    assert sum(trained[out_start:out_end]) == 0 and sum(trained) > 0
    done.tool_calls[-1].success = False
    assert rb.step_reward(done) == 0.0


def test_episode_filters_and_group_survival(qwen_tokenizer, failed):
    good = _record(qwen_tokenizer, [("so \\boxed{7}", "policy")], group="g")
    bad = _record(qwen_tokenizer, [("so \\boxed{8}", "policy")], group="g")
    broken = _record(qwen_tokenizer, [("x\n", "policy"), ("```python\nprint(x)\n```\n", "fail"),
                                      ("```output\nE\n```\n", "output")], group="g")  # fmt: skip
    rows, counts = rb.episode_rows([good, bad, broken], [1.0, 0.0, 0.0], RLParams(), qwen_tokenizer)
    assert [r.reward for r in rows] == [1.0, 0.0] and counts["rollouts_dropped/failed_code"] == 1
    rows, counts = rb.episode_rows([good, broken, broken], [1.0, 0.0, 0.0], RLParams(), qwen_tokenizer)
    assert rows == [] and counts["groups_dropped/survival"] == 1  # 1 of 3 left < half
    p = RLParams(exclude_failed_code=False, min_response_tokens=50)
    rows, counts = rb.episode_rows([good, bad], [1.0, 0.0], p, qwen_tokenizer)
    assert rows == [] and counts["rollouts_dropped/short"] == 2
    long_tail = _record(qwen_tokenizer, [("\\boxed{7} and then many more words follow here", "policy")], group="h")
    rows, counts = rb.episode_rows([long_tail], [1.0], RLParams(boxed_within_last=3), qwen_tokenizer)
    assert counts["rollouts_dropped/no_boxed_at_end"] == 1


def test_with_advantages_drops_groups_without_spread(qwen_tokenizer):
    rec = _record(qwen_tokenizer, [("x", "policy")])
    rows = [rb.Row(rec, "a", rb.EPISODE, r) for r in (1, 0, 0, 1)] + [rb.Row(rec, "b", rb.EPISODE, 1.0)] * 3
    rows += [rb.Row(rec, "s", rb.STEP, r) for r in (1, 0)]
    kept, counts = rb.with_advantages(rows)
    assert {r.group for r in kept} == {"a", "s"}
    assert counts["episode_groups_dropped/no_spread"] == 1 and counts["step_groups_kept"] == 1
    assert [round(r.advantage, 4) for r in kept[:4]] == [0.866, -0.866, -0.866, 0.866]


def test_collate_aligns_prompt_left_and_completion_right(qwen_tokenizer, failed):
    short = _record(qwen_tokenizer, [("ok", "policy")])
    rows = [rb.Row(failed, "g", rb.EPISODE, 1.0, advantage=0.5), rb.Row(short, "g", rb.STEP, 0.0, loss_start=0)]
    b = rb.collate(rows, pad_id=0)
    P, C = 3, len(failed.completion_ids)
    assert b["input_ids"].shape == (2, P + C)
    assert b["input_ids"][1, P : P + len(short.completion_ids)].tolist() == short.completion_ids
    assert b["attention_mask"][1].sum() == 3 + len(short.completion_ids)
    assert b["trained"][0].tolist() == [float(x) for x in rows[0].trained()]
    assert b["position_ids"][0, P] == 3  # the first completion token follows the 3 prompt tokens
    assert torch.isnan(b["engine_logp"][1, len(short.completion_ids) :]).all()
    assert b["levels"].tolist() == [0, 1]
