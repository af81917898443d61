"""thor_core.rl.losses: hand-computed values for each term, batch splitting, and TRL's dapo loss.

Covered: GRPO group advantages (unbiased std, degenerate groups); the clipped
surrogate with eps_low / eps_high and the dual clip; the token weights
(token-mean, per-sequence mean, per-level normalisation, masked tokens carry
no gradient); partial losses over micro-batches / ranks built from global
totals add up to the one-batch loss and gradient; the NLL term on positive
rows; k3 KL; the truncated IS weight; the importance ratio's statistics (exactly 1 and no
clipping with one update per rollout batch, clipping from the second update on, on a toy policy run on the
trainer's schedule); and policy_loss against TRL 1.16's
``GRPOTrainer._compute_loss`` with ``loss_type="dapo"``, called on a stub
``self`` (no model is built).
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from thor_core.rl.losses import (
    batch_totals,
    clipped_token_loss,
    group_advantages,
    k3_kl,
    nll_weights,
    policy_loss,
    ratio_stats,
    token_weights,
    truncated_is_weight,
)

D = torch.float32


def t(x):
    return torch.tensor(x, dtype=D)


def test_group_advantages_hand_values():
    rewards = torch.tensor([1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3])
    # group 0: mean 0.5, unbiased var (4 * 0.25) / 3 = 1/3, std 0.5773502691896257 -> +-0.5 / (std + 1e-6)
    # group 1: mean 0.75, var (3 * 0.0625 + 0.5625) / 3 = 0.25, std 0.5 -> 0.25 / 0.500001, -0.75 / 0.500001
    # group 2: rewards agree -> 0 / (0 + 1e-6) = 0; group 3: one row -> 0
    a0, a1, b1 = 0.8660239037870368, 0.499999000002, 1.499997000006
    expected = torch.tensor([a0, -a0, -a0, a0, a1, a1, a1, -b1, 0.0, 0.0, 0.0])
    torch.testing.assert_close(group_advantages(rewards, groups), expected)


def test_clipped_token_loss_clips_and_dual_clip():
    # row 0: A = +2, ratios 1.5 (above 1.28), 1.1 (inside), 0.5 (below 0.8: PPO keeps -A * ratio for A > 0)
    # row 1: A = -1, ratios 0.5 (below 0.8: clipped), 5.0 (huge), 1.1 (inside)
    ratios = t([[1.5, 1.1, 0.5], [0.5, 5.0, 1.1]])
    logp, old = torch.log(ratios), torch.zeros(2, 3, dtype=D)
    adv = t([2.0, -1.0])
    loss, was_clipped = clipped_token_loss(logp, old, adv, eps_low=0.2, eps_high=0.28, dual_clip=None)
    # row 0: -2 * 1.28 = -2.56, -2 * 1.1 = -2.2, max(-2 * 0.5, -2 * 0.8) = -1.0
    # row 1: max(0.5, 0.8) = 0.8, max(5, 1.28) = 5 (no dual clip), 1.1
    torch.testing.assert_close(loss, t([[-2.56, -2.2, -1.0], [0.8, 5.0, 1.1]]))
    assert was_clipped.tolist() == [[True, False, False], [True, False, False]]
    dual, _ = clipped_token_loss(logp, old, adv, dual_clip=3.0)
    # dual clip c = 3 on the A < 0 row: min(5, -(-1) * 3) = 3; the other tokens are below 3 and unchanged
    torch.testing.assert_close(dual, t([[-2.56, -2.2, -1.0], [0.8, 3.0, 1.1]]))
    for bad in (1.0, 0.5):
        with pytest.raises(ValueError, match="dual_clip"):
            clipped_token_loss(logp, old, adv, dual_clip=bad)


MASK = t([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]])  # 6 trained tokens; row 3 has none


def test_token_weights_token_mean_seq_mean_and_levels():
    w = token_weights(MASK, "token_mean")
    torch.testing.assert_close(w, MASK / 6)  # 1/6 on each of the 6 trained tokens, sum 1
    # seq_mean: rows with a trained token are 0, 1, 2 -> 1/3 per row, spread over its 2, 1, 3 tokens
    w = token_weights(MASK, "seq_mean")
    third = 1 / 3
    torch.testing.assert_close(w.sum(dim=1), t([third, third, third, 0.0]))
    torch.testing.assert_close(w[0], t([third / 2, third / 2, 0.0]))
    torch.testing.assert_close(w[2], t([third / 3] * 3))
    # levels [0, 0, 1, 1]: level 0 has 2 + 1 = 3 tokens -> 1/3 each; level 1 has 3 tokens -> 1/3 each
    levels = torch.tensor([0, 0, 1, 1])
    w = token_weights(MASK, "token_mean", levels)
    torch.testing.assert_close(w, MASK / 3)
    assert w[:2].sum().item() == pytest.approx(1.0) and w[2:].sum().item() == pytest.approx(1.0)
    assert w.sum().item() == pytest.approx(2.0)  # L_episode + L_step
    assert (w[MASK == 0] == 0).all() and (token_weights(MASK, "seq_mean", levels)[MASK == 0] == 0).all()
    with pytest.raises(ValueError, match="aggregation"):
        token_weights(MASK, "sum")


def _batch(seed, b=6, n=5):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, n, generator=g, dtype=D) * 3
    logp = old + 0.4 * torch.randn(b, n, generator=g, dtype=D)  # ratios spread past both clip bounds
    mask = (torch.rand(b, n, generator=g) < 0.7).to(D)
    mask[:, 0] = 1  # every row trains at least one token
    adv = torch.randn(b, generator=g, dtype=D)
    ref = old + 0.1 * torch.randn(b, n, generator=g, dtype=D)
    return logp, old, adv, mask, ref


LOSS_KW = dict(dual_clip=3.0, nll_alpha=0.01, kl_beta=0.05)


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean"])
@pytest.mark.parametrize("levels", [None, torch.tensor([0, 1, 0, 1, 1, 0])], ids=["joint", "separate"])
def test_masked_tokens_get_no_gradient(aggregation, levels):
    logp, old, adv, mask, ref = _batch(0)
    logp.requires_grad_(True)
    isw = truncated_is_weight(old, old + 0.1)
    w, v = token_weights(mask, aggregation, levels), nll_weights(mask, adv, levels)
    loss, _ = policy_loss(logp, old, adv, w, v, ref_logp=ref, is_weight=isw, **LOSS_KW)
    loss.backward()
    assert (mask == 0).any()
    assert torch.equal(logp.grad[mask == 0], torch.zeros_like(logp.grad[mask == 0]))  # exactly 0
    assert (logp.grad[mask == 1] != 0).any()


def _sum_totals(*parts):
    out = defaultdict(lambda: (0.0, 0.0))
    for part in parts:
        for level, (n_tok, n_rows) in part.items():
            out[level] = (out[level][0] + n_tok, out[level][1] + n_rows)
    return dict(out)


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean"])
@pytest.mark.parametrize("separate", [False, True], ids=["joint", "separate"])
def test_split_batch_with_global_totals_adds_up(aggregation, separate):
    logp, old, adv, mask, ref = _batch(1)
    # rows 0-2 ("rank 0") hold only level 0; rows 3-5 ("rank 1") hold both levels
    levels = torch.tensor([0, 0, 0, 1, 1, 0]) if separate else torch.zeros(6, dtype=torch.long)
    lv = levels if separate else None

    def loss_and_grad(rows, totals, nll_totals):
        lp = logp[rows].clone().requires_grad_(True)
        w = token_weights(mask[rows], aggregation, lv if lv is None else lv[rows], totals)
        v = nll_weights(mask[rows], adv[rows], lv if lv is None else lv[rows], nll_totals)
        loss, stats = policy_loss(lp, old[rows], adv[rows], w, v, ref_logp=ref[rows], **LOSS_KW)
        loss.backward()
        return loss.detach(), lp.grad, stats

    full = slice(0, 6)
    whole, whole_grad, whole_stats = loss_and_grad(full, None, None)
    parts = [slice(0, 3), slice(3, 6)]
    totals = _sum_totals(*(batch_totals(mask[p], levels[p]) for p in parts))
    positive = mask * (adv > 0).to(D)[:, None]
    nll_totals = _sum_totals(*(batch_totals(positive[p], levels[p]) for p in parts))
    assert totals == batch_totals(mask, levels) and nll_totals == batch_totals(positive, levels)
    results = [loss_and_grad(p, totals, nll_totals) for p in parts]
    torch.testing.assert_close(results[0][0] + results[1][0], whole)
    torch.testing.assert_close(torch.cat([results[0][1], results[1][1]]), whole_grad)
    for key in whole_stats:
        pair = (results[0][2][key], results[1][2][key])
        merged = {"ratio_min": min(pair), "ratio_max": max(pair)}.get(key, pair[0] + pair[1])
        torch.testing.assert_close(merged, whole_stats[key])
    # a local normalisation (no global totals) does not add up: the totals matter
    local = [loss_and_grad(p, None, None)[0] for p in parts]
    assert not torch.allclose(local[0] + local[1], whole)


def test_nll_on_positive_rows_hand_value():
    mask = t([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]])
    adv = t([1.0, -1.0, 0.5, 0.0])
    # positive rows 0 and 2 (A = 0 is not positive): 2 + 1 = 3 tokens -> weight 1/3 each
    v = nll_weights(mask, adv)
    torch.testing.assert_close(v, t([[1 / 3, 1 / 3, 0], [0, 0, 0], [1 / 3, 0, 0], [0, 0, 0]]))
    logp = t([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5], [-3.0, -9.0, -9.0], [-0.1, -0.1, -9.0]])
    w = token_weights(mask, "token_mean")  # 8 trained tokens -> 1/8 each
    # old_logp = logp: ratio 1, per-token loss -A
    # pg = (2 * -1 + 3 * 1 + 1 * -0.5 + 2 * 0) / 8 = 0.5 / 8 = 0.0625; nll = (1 + 2 + 3) / 3 = 2
    loss, stats = policy_loss(logp, logp.clone(), adv, w, v, nll_alpha=0.01)
    torch.testing.assert_close(stats["pg_loss"], t(0.0625))
    torch.testing.assert_close(stats["nll"], t(2.0))
    torch.testing.assert_close(loss, t(0.0625 + 0.01 * 2.0))  # 0.0825
    loss0, stats0 = policy_loss(logp, logp.clone(), adv, w, v, nll_alpha=0.0)
    torch.testing.assert_close(loss0, t(0.0625))
    assert "nll" not in stats0


def test_k3_kl():
    logp = t([[-1.0, -2.0, -0.7]])
    ref = t([[-2.0, -1.0, -0.7]])
    # d = ref - logp: -1 -> e^-1 + 1 - 1 = 0.36787944117144233; +1 -> e - 1 - 1 = 0.7182818284590451; 0 -> 0
    torch.testing.assert_close(k3_kl(logp, ref), t([[0.36787944117144233, 0.7182818284590451, 0.0]]))
    logp, old, adv, mask, ref = _batch(2)
    assert (k3_kl(logp, logp) == 0).all() and (k3_kl(logp, ref) > 0).all()
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, old, adv, token_weights(mask), kl_beta=0.1)


def test_truncated_is_weight():
    old = t([-1.0, -2.0, -1.5]).requires_grad_(True)
    engine = t([-2.0, -1.0, -1.5]).requires_grad_(True)
    # exp(-1 - -2) = e = 2.718 -> capped at 2; exp(-2 - -1) = e^-1 = 0.36787944117144233; exp(0) = 1
    w = truncated_is_weight(old, engine, cap=2.0)
    torch.testing.assert_close(w, t([2.0, 0.36787944117144233, 1.0]))
    assert not w.requires_grad
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="cap"):
            truncated_is_weight(old, engine, cap=bad)
    # in policy_loss it scales the per-token surrogate: ratio 1, A = 1 -> -1 * w, token-mean over 3
    loss, _ = policy_loss(t([[0.0] * 3]), t([[0.0] * 3]), t([1.0]), token_weights(t([[1, 1, 1]])), is_weight=w[None])
    torch.testing.assert_close(loss, t(-(2.0 + math.exp(-1) + 1.0) / 3))


def _trl_dapo(logp, old, adv, mask, beta=0.0, ref=None, is_ratio=None):
    """TRL 1.16 ``GRPOTrainer._compute_loss`` (trl/trainer/grpo_trainer.py:3020) on a stub ``self``.

    The stub carries exactly what the method reads for loss_type="dapo": the model forward
    (``_get_per_token_logps_and_entropies``) returns our logp; one process, gradient accumulation 1
    and steps_per_generation 1, so the normaliser is num_items_in_batch = all completion tokens.
    """
    from trl.trainer.grpo_trainer import GRPOTrainer

    b, n = mask.shape
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        loss_type="dapo",
        beta=beta,
        epsilon_low=0.2,
        epsilon_high=0.28,
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1),
        use_vllm=is_ratio is not None,
        vllm_importance_sampling_correction=True,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        accelerator=SimpleNamespace(num_processes=1, gather=lambda x: x, reduce=lambda x, reduction: x),
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    inputs = {
        "prompt_ids": torch.zeros(b, 1, dtype=torch.long),
        "prompt_mask": torch.ones(b, 1, dtype=torch.long),
        "completion_ids": torch.zeros(b, n, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "num_items_in_batch": mask.sum(),
    }
    if ref is not None:
        inputs["ref_per_token_logps"] = ref
    if is_ratio is not None:
        inputs["importance_sampling_ratio"] = is_ratio
    return GRPOTrainer._compute_loss(stub, None, inputs), stub._metrics["train"]


@pytest.mark.parametrize("beta, use_is", [(0.0, False), (0.04, False), (0.0, True)], ids=["plain", "kl", "tis"])
def test_policy_loss_matches_trl_dapo(beta, use_is):
    logp, old, adv, mask, ref = _batch(3, b=8, n=12)
    isw = truncated_is_weight(old, old + 0.3 * torch.randn(8, 12, dtype=D)) if use_is else None
    lp_trl = logp.clone().requires_grad_(True)
    trl_loss, metrics = _trl_dapo(lp_trl, old, adv, mask, beta, ref if beta else None, isw)
    trl_loss.backward()
    lp = logp.clone().requires_grad_(True)
    ours, stats = policy_loss(
        lp, old, adv, token_weights(mask, "token_mean"), None, nll_alpha=0.0, dual_clip=None,
        ref_logp=ref, kl_beta=beta, is_weight=isw,
    )  # fmt: skip
    ours.backward()
    torch.testing.assert_close(ours, trl_loss)
    torch.testing.assert_close(lp.grad, lp_trl.grad)
    assert 0 < stats["clip_frac"] < 1  # both clip bounds were hit, and TRL counts the same tokens
    assert stats["clip_frac"].item() == pytest.approx(metrics["clip_ratio/region_mean"][0])


def test_ratio_stats_hand_values_and_padding():
    # trained tokens (w != 0): ratios 1.5, 1.1 (row 0) and 0.5 (row 1); the padding holds an inf log-prob
    ratios = t([[1.5, 1.1, 1.0], [0.5, 1.0, 1.0]])
    logp = torch.log(ratios)
    logp[1, 2] = -math.inf
    w = token_weights(t([[1, 1, 0], [1, 0, 0]]), "token_mean")  # 1/3 each
    s = ratio_stats(logp, torch.zeros(2, 3, dtype=D), w)
    mean = (1.5 + 1.1 + 0.5) / 3
    assert s["loss_weight"].item() == pytest.approx(1.0)
    assert s["ratio_mean"].item() == pytest.approx(mean)
    assert s["ratio_dev_sq"].item() == pytest.approx((0.25 + 0.01 + 0.25) / 3)
    assert (s["ratio_min"].item(), s["ratio_max"].item()) == pytest.approx((0.5, 1.5))
    empty = ratio_stats(logp, logp, torch.zeros(2, 3, dtype=D))
    assert empty["ratio_min"].item() == math.inf and empty["ratio_max"].item() == -math.inf


def _toy_update_schedule(updates: int, lr: float = 3.0) -> list[dict[str, float]]:
    """The trainer's schedule on a toy policy (one logit table over 5 tokens, 8 rows of 4 sampled tokens, group
    advantages): old log-probs once before the first update, then ``updates`` mini-batches rows[u::U], one SGD
    step each. Returns each update's ``policy_loss`` statistics."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(5, generator=gen, dtype=D).requires_grad_(True)
    ids = torch.randint(0, 5, (8, 4), generator=gen)
    adv = group_advantages(t([1, 0, 0, 1, 1, 0, 1, 0]), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    mask = torch.ones(8, 4, dtype=D)

    def logp(rows):
        return torch.log_softmax(theta, 0)[ids[rows]]

    old = logp(torch.arange(8)).detach() if updates > 1 else None
    opt = torch.optim.SGD([theta], lr=lr)
    out = []
    for u in range(updates):
        rows = torch.arange(8)[u::updates]
        lp = logp(rows)
        loss, stats = policy_loss(lp, old[rows] if old is not None else lp.detach(), adv[rows],
                                  token_weights(mask[rows]), dual_clip=3.0)  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append({k: float(v) for k, v in stats.items()})
    return out


def test_one_update_per_batch_is_on_policy_and_more_updates_let_the_clips_act():
    from collections import Counter

    from thor_core.rl.run import finalize_metrics, merge_stats

    [on] = _toy_update_schedule(1)
    assert on["ratio_mean"] == on["loss_weight"] and on["ratio_dev_sq"] == 0.0  # exactly, not approximately
    assert on["ratio_min"] == on["ratio_max"] == 1.0 and on["clip_frac"] == 0.0
    first, second = _toy_update_schedule(2)
    # the first mini-batch is still at the old parameters; the second comes after the parameters moved
    assert first["ratio_min"] == pytest.approx(1.0) and first["ratio_max"] == pytest.approx(1.0)
    assert first["clip_frac"] == 0.0
    assert second["ratio_max"] > 1.28 or second["ratio_min"] < 0.8
    assert second["clip_frac"] > 0
    # the step's metrics (thor_core.rl.run): means over both updates' tokens, extremes over both
    m = finalize_metrics(dict(merge_stats(merge_stats(Counter(), first), second), optimizer_steps=2))
    assert m["clip_frac"] == pytest.approx((first["clip_frac"] + second["clip_frac"]) / 2)
    assert m["ratio_mean"] == pytest.approx((first["ratio_mean"] + second["ratio_mean"]) / 2)
    assert m["ratio_std"] > 0
    assert (m["ratio_min"], m["ratio_max"]) == (min(first["ratio_min"], second["ratio_min"]), second["ratio_max"])
    m1 = finalize_metrics(dict(merge_stats(Counter(), on), optimizer_steps=1))
    assert (m1["ratio_mean"], m1["ratio_std"], m1["ratio_min"], m1["ratio_max"], m1["clip_frac"]) == (1, 0, 1, 1, 0)
