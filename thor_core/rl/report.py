"""Notebook 03's pieces: its parameters, the start model, the before/after check, curves and samples.

- Notebook 03's parameters compose ``RLParams``, the check's ``CheckParams`` and ``RLNotebook`` (the model to fall
  back on when the start checkpoint, notebook 02's, is missing; the step-level check's sizes); ``rl.config``.
- ``start_model``: the checkpoint, or the fallback with a printed note.
- ``before_after``: the start model and the RL checkpoint on held-out
  procedural problems (the one held-out rule, ``thor_core.data.heldout``: notebook 02's seed, none of the RL
  questions), same rollout seeds, paired exact McNemar tests; written to
  ``before_after.json``.
- ``step_check``: the step-level pass rate of both models on the failed
  calls of the start model's held-out answers (``thor_core.rl.step_check``).
- ``plot_curves``: reward, accuracy, tool success and step-level pass rate
  per step from ``metrics.jsonl`` (PNG and PDF), beside them the engine/trainer log-prob mismatch (mean and max
  |difference|, the share of tokens past ``mismatch_threshold``) and, when ``tis_cap`` was on, the truncated-IS
  weights' spread.
- ``metrics_table``: the per-step numbers as a Markdown table.
- ``trends`` / ``trends_table``: does the episode reward or the step-level
  pass rate rise over training? A Cochran-Armitage trend test over all steps
  (``thor_core.stats.trend_test``), from the counts in ``metrics.jsonl``.
- ``episode_with_regenerations``: a rollout of a saved step and its
  step-level continuations, for ``thor_core.viewer``; ``write_viewer``
  the run's ``trajectories.html``.

Not covered: the ablation ladder across stages (notebook 05).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from thor_core import viewer
from thor_core.data import heldout
from thor_core.evaluation.before_after import CheckParams, compare_models
from thor_core.evaluation.before_after import before_after_table as evaluation_table
from thor_core.files import repo_path
from thor_core.record import MISMATCH_THRESHOLD, Trajectory, read_jsonl
from thor_core.rl import step_check as sc
from thor_core.rl.config import RLNotebook, RLParams
from thor_core.rl.run import PARAMS_FILE, read_metrics, resolve_start_model, training_problems
from thor_core.rl.step_check import step_check_table  # noqa: F401 (notebook 03 shows it)
from thor_core.stats import trend_test

RESULT = "before_after.json"
CURVES = (("reward", "episode reward"), ("accuracy", "accuracy"), ("tool_success", "tool-call success"),
          ("step_pass_rate", "step-level pass rate"))  # fmt: skip


def start_model(p: RLParams, nb: RLNotebook) -> tuple[str, str | None]:
    """(model to start from, a note when it is the fallback)."""
    if repo_path(p.model).exists() or not p.model.startswith(("outputs", ".", "/")):
        return p.model, None
    return nb.fallback_model, (
        f"note: the start model {p.model} does not exist (run notebook 02 first for the method's chain); "
        f"starting from {nb.fallback_model} instead"
    )


def heldout_problems(p: RLParams, check: CheckParams) -> tuple[list, dict[str, Any]]:
    """The check's held-out problems (``data.heldout``): none of the RL training problems (the same seed as notebook
    02's check, so the two checks share their problems wherever neither excludes one)."""
    return heldout.heldout_problems(check.heldout_n, check.heldout_seed, {"rl training problems": training_problems(p)})


def before_after(p: RLParams, check: CheckParams, start: str, final: str, sandbox, grader=None) -> dict[str, Any]:
    """The start model and the RL checkpoint on held-out problems (``evaluation.before_after.compare_models``)."""
    problems, note = heldout_problems(p, check)
    models = {"start": resolve_start_model(start), "rl": str(final)}
    mode = "tir" if p.tools else "cot"
    return compare_models(models, problems, note, check, p.backend, p.out(), sandbox, grader, mode)


def before_after_table(report: dict[str, Any]) -> str:
    return evaluation_table(report, labels=("start", "RL"))


def step_check(
    p: RLParams, check: CheckParams, nb: RLNotebook, report: dict[str, Any], sandbox
) -> dict[str, Any] | None:
    """``step_check.step_check`` on the before/after check's models and the start model's answers."""
    models = dict(report["models"])
    start_answers = report["records"][next(iter(models))]
    return sc.step_check(p, models, start_answers, p.out(), sandbox, nb.step_check_n, nb.step_check_k, check.eval_seed)


def _points(rows: list[dict[str, Any]], key: str) -> tuple[list, list]:
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None and r[key] == r[key]]  # NaN: none
    return [s for s, _ in points], [v for _, v in points]


def plot_curves(out_dir: str | os.PathLike) -> Path:
    """Reward, accuracy, tool success and step-level pass rate per step, then the engine/trainer mismatch and (with
    ``tis_cap``) the truncated-IS weights: ``curves.png`` and ``curves.pdf``."""
    from matplotlib.figure import Figure

    rows = read_metrics(out_dir)
    tis = any("tis_weight_mean" in r for r in rows)
    fig = Figure(figsize=(2.5 * (len(CURVES) + 1 + tis), 2.8))
    axes = fig.subplots(1, len(CURVES) + 1 + tis)
    marker = "o" if len(rows) < 30 else None
    for ax, (key, title) in zip(axes, CURVES):
        ax.plot(*_points(rows, key), marker=marker)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(-0.05, 1.05)
    ax = axes[len(CURVES)]  # engine vs trainer log-probs on the trained tokens
    ax.plot(*_points(rows, "logprob_diff_abs"), marker=marker, label="mean |diff|")
    ax.plot(*_points(rows, "logprob_diff_max"), marker=marker, label="max |diff|")
    ax.axhline(_threshold(out_dir), color="#d93025", lw=0.8, ls="--", label="threshold")
    if any(y > 0 for y in _points(rows, "logprob_diff_max")[1]):
        ax.set_yscale("log")
    share = ax.twinx()
    share.plot(*_points(rows, "logprob_diff_frac"), color="#5f6368", ls=":", marker=marker, label="share past")
    share.set_ylim(-0.05, 1.05)
    share.tick_params(labelsize=7)
    share.set_ylabel("share of tokens past (dotted)", fontsize=7)
    ax.legend(fontsize=6, loc="upper left")
    ax.set_title("engine vs trainer log-prob (nats)", fontsize=9)
    if tis:
        ax = axes[-1]
        steps, mean = _points(rows, "tis_weight_mean")
        std = [r.get("tis_weight_std", 0.0) for r in rows if r.get("tis_weight_mean") == r.get("tis_weight_mean")]
        ax.errorbar(steps, mean, yerr=std, marker=marker, capsize=2, label="mean ± std")
        ax.plot(*_points(rows, "tis_weight_min"), ls=":", label="min")
        ax.plot(*_points(rows, "tis_weight_max"), ls=":", label="max")
        ax.legend(fontsize=6)
        ax.set_title("truncated-IS weights", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(out_dir) / "curves.png"
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".pdf"))
    return path


# the per-step columns notebook 03 shows (every number is in metrics.jsonl; clip_frac and ratio_std are 0 with
# one update per rollout batch, ratio_mean / _min / _max are logged too)
TABLE_KEYS = ("step", "reward", "accuracy", "tool_success", "step_pass_rate", "rows", "rows_step", "loss", "entropy",
              "clip_frac", "ratio_std", "logprob_diff_abs", "logprob_diff_frac", "infra_dropped", "grad_norm",
              "time/rollout_s", "time/update_s", "time/step_s")  # fmt: skip


def metrics_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per step, ``TABLE_KEYS`` (floats to 3 significant digits; '-' where a step has none)."""

    def cell(value) -> str:
        return f"{value:.3g}" if isinstance(value, float) else "-" if value is None else str(value)

    lines = ["| " + " | ".join(TABLE_KEYS) + " |", "|" + "---|" * len(TABLE_KEYS)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in TABLE_KEYS) + " |" for r in rows]
    return "\n".join(lines)


# (rate key, trials key, what it is): the rates per step that trends() tests, with their counts per step
TRENDS = (("reward", "episode_rollouts", "episode reward (training questions)"),
          ("step_pass_rate", "step_rollouts", "step-level pass rate"))  # fmt: skip


def trends(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each of ``TRENDS``: successes / trials per step (rate x trials, rounded) and the trend test over steps."""
    out = []
    for key, trials_key, label in TRENDS:
        steps = [r for r in rows if r.get(trials_key)]
        trials = [int(r[trials_key]) for r in steps]
        successes = [round(r[key] * n) for r, n in zip(steps, trials)]
        test = trend_test(successes, trials, [r["step"] for r in steps])
        out.append({"metric": label, "successes": successes, "trials": trials, **test})
    return out


def _share(successes: list[int], trials: list[int]) -> str:
    return f"{sum(successes)}/{sum(trials)}" if sum(trials) else "-"


def trends_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per metric, the pooled rate, the first and last third of the steps, z and the one-sided p of a rise."""
    lines = ["| over training | pooled | first third of steps | last third | trend z | p (rising) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for t in trends(rows):
        third = max(1, len(t["trials"]) // 3)
        z = "-" if t["z"] is None else f"{t['z']:+.2f}"
        p = "-" if t["p_rising"] is None else f"{t['p_rising']:.3g}"
        lines.append(
            f"| {t['metric']} | {_share(t['successes'], t['trials'])} "
            f"| {_share(t['successes'][:third], t['trials'][:third])} "
            f"| {_share(t['successes'][-third:], t['trials'][-third:])} | {z} | {p} |"
        )
    return "\n".join(lines)


def _threshold(out_dir: str | os.PathLike) -> float:
    """The run's ``mismatch_threshold`` (runs from before the setting: the default)."""
    settings = Path(out_dir) / PARAMS_FILE
    values = json.loads(settings.read_text()) if settings.exists() else {}
    return float(values.get("mismatch_threshold", MISMATCH_THRESHOLD))


def saved_steps(out_dir: str | os.PathLike) -> list[int]:
    folder = Path(out_dir) / "samples"
    return sorted(int(f.stem[5:]) for f in folder.glob("step-*.jsonl")) if folder.exists() else []


def episode_with_regenerations(out_dir, step: int, n: int = 1) -> list[tuple[Trajectory, list[Trajectory]]]:
    """Up to ``n`` (episode rollout, its step-level continuations) pairs of a saved step; rollouts with
    regenerations first, then ones with calls."""
    records = read_jsonl(Path(out_dir) / "samples" / f"step-{step}.jsonl")
    episodes = [r for r in records if r.metadata.get("rl_level") == "episode"]
    children: dict[str, list[Trajectory]] = {}
    for r in records:
        if r.metadata.get("rl_level") == "step":
            children.setdefault(r.metadata["parent"], []).append(r)
    pairs = [(e, children.get(f"{e.metadata['group']}/{e.metadata['sample']}", [])) for e in episodes]
    pairs.sort(key=lambda pair: (bool(pair[1]), bool(pair[0].tool_calls)), reverse=True)
    return pairs[:n]


def write_viewer(out_dir, tokenizer, per_step: int = 2) -> Path:
    """``trajectories.html``: ``per_step`` rollouts of every saved step with their step-level regenerations."""
    pairs = [pair for s in saved_steps(out_dir) for pair in episode_with_regenerations(out_dir, s, per_step)]
    return viewer.write_html(
        pairs,
        Path(out_dir) / "trajectories.html",
        tokenizer,
        title="RL rollouts",
        mismatch_threshold=_threshold(out_dir),
    )
