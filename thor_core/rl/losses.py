"""The RL kernels: small pure functions on tensors, one per term of THOR's objective.

Notation (docs/METHOD.md, "Hierarchical RL"). A batch holds rows; each row is one
sampled continuation with a group id (an episode-level group: G rollouts of
one question; or a step-level group: G regenerations of one cut prefix). Per
token t of row i:

    ratio_it = exp(logp_it - old_logp_it)
    A_i      = (r_i - mean_g r) / (std_g r + eps)                       group_advantages
    l_it     = max(-A_i ratio_it, -A_i clip(ratio_it, 1 - eps_low, 1 + eps_high))
    l_it     = min(l_it, -c A_i)            when A_i < 0 (dual clip, c = 3)  clipped_token_loss
    L        = sum_it w_it l_it  +  alpha * sum_it v_it (-logp_it)  [+ beta KL]

The weights w (``token_weights``) hold the loss mask (prompts, prefixes and
inserted tool outputs are 0) and the aggregation: token-mean over the whole
batch (the authors': w = 1 / N_tokens), a mean per sequence then over rows
(w = 1 / (n_rows len_i)), and, for THOR's L_episode + L_step, the same taken
within each level. v are the NLL weights: token-mean over the rows with A > 0
(alpha = 0.01, both levels). The normalisers are *global* counts: with
several processes the caller all-reduces them first, so every rank's partial
sum adds up to the one-process loss.

Also here: ``ratio_stats``, the ratio's mean, spread and extremes and the clip
fraction on trained tokens (exactly 1 and 0 on-policy; they move only with
several updates per rollout batch), the k3 KL estimate to a reference policy (off by default: beta 0)
and the truncated importance-sampling weight for the gap between the
rollout engine's and the trainer's log-probs (min(pi_old / pi_engine, C),
detached). Token log-probs and entropies come from TRL's
``selective_log_softmax`` / ``entropy_from_logits`` (``thor_core.rl.policy``).
"""

from __future__ import annotations

from typing import Literal

import torch

Aggregation = Literal["token_mean", "seq_mean"]


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(r - group mean) / (group std + eps) per row; the std is the unbiased one (as TRL and verl).

    A group of one row has no spread: its advantage is 0.
    """
    rewards = rewards.float()
    adv = torch.zeros_like(rewards)
    for g in torch.unique(group_ids):
        sel = group_ids == g
        r = rewards[sel]
        if r.numel() < 2:
            continue
        adv[sel] = (r - r.mean()) / (r.std() + eps)
    return adv


def clipped_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate loss [B, T] and where a clip (either) was active (bool [B, T]).

    ``advantages`` is per row [B]. ``dual_clip`` c > 1 bounds the loss of a
    negative-advantage token at -c A (the authors' c = 3); None turns it off.
    """
    if dual_clip is not None and dual_clip <= 1:
        raise ValueError(f"dual_clip must be > 1 (the authors use 3) or None, got {dual_clip}")
    a = advantages[:, None]
    ratio = torch.exp(logp - old_logp)
    unclipped = -a * ratio
    clipped = -a * torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    was_clipped = clipped > unclipped
    if dual_clip is not None:
        bound = -a * dual_clip
        was_clipped = was_clipped | ((a < 0) & (loss > bound))
        loss = torch.where(a < 0, torch.minimum(loss, bound), loss)
    return loss, was_clipped


def token_weights(
    mask: torch.Tensor,
    aggregation: Aggregation = "token_mean",
    levels: torch.Tensor | None = None,
    totals: dict[int, tuple[float, float]] | None = None,
) -> torch.Tensor:
    """Weights [B, T] that turn a per-token loss into the batch loss by a plain sum.

    ``mask`` [B, T] is 1 on trained tokens. ``levels`` [B] (optional) splits
    rows into levels normalised separately (THOR's L_episode + L_step); None
    is one level for all. ``totals`` maps level -> (tokens, rows) over the
    *whole* batch, all processes included (``batch_totals``, summed across
    ranks); None takes them from ``mask`` (one process, one micro-batch).
    """
    mask = mask.float()
    if levels is None:
        levels = torch.zeros(mask.shape[0], dtype=torch.long, device=mask.device)
    if totals is None:
        totals = batch_totals(mask, levels)
    if missing := set(torch.unique(levels).tolist()) - set(totals):
        raise ValueError(f"token_weights: levels {sorted(missing)} are in the batch but not in totals")
    weights = torch.zeros_like(mask)
    lengths = mask.sum(dim=1).clamp(min=1)
    for level, (n_tokens, n_rows) in totals.items():
        sel = levels == level
        if not sel.any():
            continue
        if aggregation == "token_mean":
            weights[sel] = mask[sel] / max(n_tokens, 1.0)
        elif aggregation == "seq_mean":
            weights[sel] = mask[sel] / lengths[sel, None] / max(n_rows, 1.0)
        else:
            raise ValueError(f"aggregation must be 'token_mean' or 'seq_mean', got {aggregation!r}")
    return weights


def batch_totals(mask: torch.Tensor, levels: torch.Tensor) -> dict[int, tuple[float, float]]:
    """level -> (trained tokens, rows with any trained token) in this (part of the) batch."""
    mask = mask.float()
    out = {}
    for level in torch.unique(levels).tolist():
        sel = levels == level
        out[int(level)] = (float(mask[sel].sum()), float((mask[sel].sum(dim=1) > 0).sum()))
    return out


def nll_weights(
    mask: torch.Tensor, advantages: torch.Tensor, levels: torch.Tensor | None = None, totals=None
) -> torch.Tensor:
    """Token-mean weights of the NLL term: tokens of rows with advantage > 0, per level when ``levels`` is given.

    ``totals``: as in ``token_weights`` but counted over positive rows only
    (``batch_totals(mask * (adv > 0), levels)`` summed across ranks).
    """
    positive = mask.float() * (advantages > 0).float()[:, None]
    return token_weights(positive, "token_mean", levels, totals)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def truncated_is_weight(old_logp: torch.Tensor, engine_logp: torch.Tensor, cap: float = 2.0) -> torch.Tensor:
    """min(pi_old / pi_engine, cap) per token, detached: corrects for sampling from the engine's copy."""
    if cap <= 0:
        raise ValueError(f"the truncated-IS cap must be > 0, got {cap}")
    return torch.exp(old_logp - engine_logp).clamp(max=cap).detach()


def mismatch_stats(
    diff: torch.Tensor, threshold: float, tis: tuple[torch.Tensor, float] | None = None
) -> dict[str, torch.Tensor]:
    """How far the engine's sampled log-probs are from the trainer's, as sums that add across micro-batches and ranks.

    ``diff``: engine - trainer log-prob on the trained tokens where the engine gave one (1-D). ``logprob_diff_abs_sum``
    / ``logprob_diff_n`` is the mean |diff|, ``logprob_diff_over`` / ``logprob_diff_n`` the share past ``threshold``,
    ``logprob_diff_max`` the largest (0 when there is none). ``tis``: (the truncated-IS weights on the same tokens, the
    cap): their sum, sum of squares and count capped (``tis_weight_*``; mean and std from the sums) and their min / max.
    """
    a = diff.abs()
    out = {"logprob_diff_abs_sum": a.sum(), "logprob_diff_n": torch.tensor(float(a.numel())),
           "logprob_diff_over": (a > threshold).sum(), "logprob_diff_max": a.max() if a.numel() else torch.tensor(0.0)}  # fmt: skip
    if tis is not None:
        w, cap = tis
        out.update(tis_weight_sum=w.sum(), tis_weight_sq_sum=(w**2).sum(), tis_capped=(w >= cap).sum())
        if w.numel():
            out.update(tis_weight_min=w.min(), tis_weight_max=w.max())
    return {k: v.detach() for k, v in out.items()}


def ratio_stats(
    logp: torch.Tensor, old_logp: torch.Tensor, weights: torch.Tensor, was_clipped: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """How far the policy moved from the one that sampled: the ratio exp(logp - old_logp) on trained tokens.

    Weighted like the loss, so the sums add up across micro-batches, updates and ranks: ``loss_weight`` =
    sum w, ``ratio_mean`` = sum w ratio, ``ratio_dev_sq`` = sum w (ratio - 1)^2, ``clip_frac`` = sum w [a clip
    acted] (divide by the summed ``loss_weight`` for means; the std is sqrt(E[(ratio - 1)^2] - (E[ratio] - 1)^2));
    ``ratio_min`` and ``ratio_max`` over the tokens with w != 0 (+inf / -inf when there are none). On-policy
    (``old_logp`` the same values as ``logp``) the ratio is exactly 1: mean 1, std 0, min = max = 1, clip_frac 0.
    """
    trained = weights != 0
    ratio = torch.where(trained, torch.exp(logp - old_logp), 1.0)  # padding may hold inf/nan
    inf = torch.tensor(float("inf"), device=ratio.device)
    out = {
        "loss_weight": weights.sum(),
        "ratio_mean": (ratio * weights).sum(),
        "ratio_dev_sq": ((ratio - 1) ** 2 * weights).sum(),
        "ratio_min": torch.where(trained, ratio, inf).min() if ratio.numel() else inf,
        "ratio_max": torch.where(trained, ratio, -inf).max() if ratio.numel() else -inf,
    }
    if was_clipped is not None:
        out["clip_frac"] = (was_clipped.float() * weights).sum()
    return {k: v.detach() for k, v in out.items()}


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    nll_w: torch.Tensor | None = None,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    dual_clip: float | None = None,
    nll_alpha: float = 0.01,
    ref_logp: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    is_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """THOR's loss for one micro-batch: clipped surrogate + alpha NLL (+ beta KL), summed with the weights.

    Returns the loss (a partial sum when ``weights`` were built from global
    totals) and detached statistics: ``ratio_stats`` of the importance ratio and where the clips acted, and
    the weighted sums of the loss terms. Add them across micro-batches (``ratio_min`` / ``ratio_max``: take
    the min / max); a mean is a sum divided by the summed ``loss_weight`` (with one level and the whole batch
    in ``weights``, ``loss_weight`` is 1 and ``clip_frac`` the fraction itself).
    """
    per_token, was_clipped = clipped_token_loss(logp, old_logp, advantages, eps_low, eps_high, dual_clip)
    if is_weight is not None:
        per_token = per_token * is_weight
    per_token = torch.where(weights != 0, per_token, 0.0)  # padding may hold inf/nan: never let 0 * inf in
    pg = (per_token * weights).sum()
    loss = pg
    stats = {"pg_loss": pg.detach(), **ratio_stats(logp.detach(), old_logp, weights, was_clipped)}
    if nll_w is not None and nll_alpha:
        nll = (torch.where(nll_w != 0, -logp, 0.0) * nll_w).sum()
        loss = loss + nll_alpha * nll
        stats["nll"] = nll.detach()
    if kl_beta:
        if ref_logp is None:
            raise ValueError("kl_beta > 0 needs the reference log-probs (ref_logp)")
        kl = (torch.where(weights != 0, k3_kl(logp, ref_logp), 0.0) * weights).sum()
        loss = loss + kl_beta * kl
        stats["kl"] = kl.detach()
    return loss, stats
