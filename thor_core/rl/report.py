"""Notebook 03's pieces: its parameters, the start model, the before/after check, curves and samples.

- ``NotebookParams``: ``RLParams`` plus the check's settings and the model to
  fall back on when the start checkpoint (notebook 02's) is missing.
- ``start_model``: the checkpoint, or the fallback with a printed note.
- ``before_after``: the start model and the RL checkpoint on held-out
  procedural problems (notebook 02's set: same seed, none of the RL
  questions), same rollout seeds, paired exact McNemar tests; written to
  ``before_after.json``.
- ``step_check``: the step-level pass rate of both models on the failed
  calls of the start model's held-out answers (``thor_core.rl.step_check``).
- ``plot_curves``: reward, accuracy, tool success and step-level pass rate
  per step from ``metrics.jsonl`` (PNG and PDF).
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

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thor_core.record import Trajectory, read_jsonl
from thor_core.rl import step_check as sc
from thor_core.rl.config import RLParams
from thor_core.rl.run import read_metrics
from thor_core.rl.step_check import step_check_table  # noqa: F401 (notebook 03 shows it)
from thor_core.runs import repo_path
from thor_core.sft_eval import before_after_table as sft_before_after_table
from thor_core.sft_eval import check_rollout_config, compare_models

RESULT = "before_after.json"
CURVES = (("reward", "episode reward"), ("accuracy", "accuracy"), ("tool_success", "tool-call success"),
          ("step_pass_rate", "step-level pass rate"))  # fmt: skip


@dataclass
class NotebookParams(RLParams):
    """Parameters of notebook 03 (params/*/03_rl.yaml): training, then the before/after check."""

    fallback_model: str = field(
        default="embedded:qwen2.5-coder-0.5b-instruct", metadata={"help": "start model when `model` is missing"}
    )
    heldout_n: int = field(default=20, metadata={"help": "held-out procedural problems for the check (0: skip)"})
    heldout_seed: int = field(default=9001, metadata={"help": "their generator seed (notebook 02's)"})
    eval_k: int = field(default=2, metadata={"help": "samples per held-out problem"})
    eval_temperature: float = field(default=0.6, metadata={"help": "sampling temperature of the check"})
    eval_max_new_tokens: int = field(default=768, metadata={"help": "completion budget of the check"})
    eval_max_tool_rounds: int = field(default=4, metadata={"help": "code calls per answer in the check"})
    eval_seed: int = field(default=0, metadata={"help": "rollout seed of the check, the same for both models"})
    step_check_n: int = field(
        default=16, metadata={"help": "held-out step-level check: failed calls of the start model's answers (0: skip)"}
    )
    step_check_k: int = field(default=4, metadata={"help": "continuations per prefix in the step-level check"})
    show_trajectories: int = field(default=2, metadata={"help": "rollouts shown before and after"})
    run_dir: str | None = field(default=None, metadata={"help": "run folder (run_notebook sets it)"})
    output_dir: str | None = field(default=None, metadata={"help": "run folder (null: outputs/adhoc/03_rl)"})

    def training(self, model: str, out_dir: str | os.PathLike) -> RLParams:
        names = {f.name for f in dataclasses.fields(RLParams)}
        return RLParams(**{**{n: getattr(self, n) for n in names}, "model": model, "output_dir": str(out_dir)})

    def rollout_config(self):
        return check_rollout_config(self)


def start_model(p: NotebookParams) -> tuple[str, str | None]:
    """(model to start from, a note when it is the fallback)."""
    if repo_path(p.model).exists() or not p.model.startswith(("outputs", ".", "/")):
        return p.model, None
    return p.fallback_model, (
        f"note: the start model {p.model} does not exist (run notebook 02 first for the method's chain); "
        f"starting from {p.fallback_model} instead"
    )


def heldout_problems(p: NotebookParams, training) -> tuple[list, dict[str, Any]]:
    """``heldout_n`` generated problems none of the RL questions duplicate."""
    from thor_core.problems import find_overlap, generate_problems

    candidates = generate_problems(2 * p.heldout_n + 20, seed=p.heldout_seed)
    clashes = {a for a, _ in find_overlap(candidates, [training])}
    kept = [c for c in candidates if c.id not in clashes][: p.heldout_n]
    return kept, {"seed": p.heldout_seed, "n": len(kept), "excluded": len(clashes)}


def before_after(p: NotebookParams, out_dir, start: str, final: str, sandbox, grader=None) -> dict[str, Any]:
    """The start model and the RL checkpoint on held-out problems (``sft_eval.compare_models``)."""
    from thor_core.rl.run import resolve_start_model, training_problems

    problems, note = heldout_problems(p, training_problems(p))
    models = {"start": resolve_start_model(start), "rl": str(final)}
    return compare_models(models, problems, note, p, out_dir, sandbox, grader, "tir" if p.tools else "cot")


def before_after_table(report: dict[str, Any]) -> str:
    return sft_before_after_table(report, labels=("start", "RL"))


def step_check(p: NotebookParams, out_dir, check: dict[str, Any], sandbox) -> dict[str, Any] | None:
    """``step_check.step_check`` on the before/after check's models and the start model's answers."""
    models = dict(check["models"])
    start_answers = check["records"][next(iter(models))]
    return sc.step_check(p, models, start_answers, out_dir, sandbox, p.step_check_n, p.step_check_k, p.eval_seed)


def plot_curves(out_dir: str | os.PathLike) -> Path:
    """Reward, accuracy, tool success and step-level pass rate per step: ``curves.png`` and ``curves.pdf``."""
    from matplotlib.figure import Figure

    rows = read_metrics(out_dir)
    fig = Figure(figsize=(10, 2.8))
    for ax, (key, title) in zip(fig.subplots(1, len(CURVES)), CURVES):
        points = [(r["step"], r[key]) for r in rows if r.get(key) == r.get(key)]  # NaN: no such rollouts
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o" if len(points) < 30 else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(out_dir) / "curves.png"
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".pdf"))
    return path


# the per-step columns notebook 03 shows (every number is in metrics.jsonl)
TABLE_KEYS = ("step", "reward", "accuracy", "tool_success", "step_pass_rate", "rows", "rows_step", "loss", "entropy",
              "clip_frac", "logprob_diff_abs", "grad_norm", "time/rollout_s", "time/update_s", "time/step_s")  # fmt: skip


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
    from thor_core.stats import trend_test

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
    from thor_core import viewer

    pairs = [pair for s in saved_steps(out_dir) for pair in episode_with_regenerations(out_dir, s, per_step)]
    return viewer.write_html(pairs, Path(out_dir) / "trajectories.html", tokenizer, title="RL rollouts")
