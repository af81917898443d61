"""Notebook 04: each stage's checkpoint, a rung of the ablation ladder, on held-out benchmarks.

Covered:

- ``RungsParams``: notebook 04's parameters: ``rungs`` maps a rung (T1..T5 of
  ``RUNGS``) to its model (an ``embedded:`` name, a hub id or
  a run's ``final/`` folder); T6 is not a model but T5 with self-correction
  (``self_correction_rungs``). TIR for every rung, CoT too for ``cot_rungs``.
- ``plan``: which rungs run and which are skipped: a local model folder that
  is missing (or has no ``config.json``) skips its rung with a note naming the
  notebook command that makes it; nothing is substituted.
- ``evaluate_rungs``: one model in memory at a time, ``evaluation.evaluate``
  per mode into ``<run_dir>/<rung>/`` (``records-<tag>.jsonl`` with tag
  ``tir``, ``cot`` or ``tir-sc``, and its config and summaries), resumable as
  ``evaluate`` is; the layout ``ladder.SUITES["04_correction_inference"]`` reads.
  The benchmark ``heldout`` is ``problems.generate_problems(heldout_n,
  seed=heldout_seed)``, the first candidates of notebooks 02/03's held-out set.
- Tables (Markdown) from the summaries (``load_summaries`` re-reads them):
  Avg@k per rung and mode, a column per benchmark and the mean over
  benchmarks (the paper's Table 1 layout), and Avg@k, pass@k and maj@k with a
  row per benchmark (95% bootstrap intervals over problems,
  ``thor_core.evaluation.metrics``);
  best-of-N (execution pass rate vs majority vote) at the asked N where k
  allows, an answer without calls scored ``no_call_score`` (0, or the
  authors' 1.0, passed to ``runner.evaluate``); the cost of self-correction (tokens
  and wall time, tir-sc vs tir on the same rung); the 2x2 tool success x correctness table per rung with
  Pearson's chi-square (``stats.chi_square_2x2``). Two figures; ``write_report``.

Not covered: paired tests between rungs (notebook 05, ``thor_core.runs.ladder``),
HumanEval (``code.evaluate_code``), the tokens of attempts that
self-correction discarded (not in the policy-token counts; their time is in
the wall time), and clustering of the k samples of a question (the intervals
and p-values treat them as independent).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from matplotlib.figure import Figure

from thor_core.backends import make_backend
from thor_core.data import heldout
from thor_core.engine.rollout import RolloutConfig, rollout_config
from thor_core.evaluation import runner as evaluation
from thor_core.evaluation.report import metric_cell, no_call_note
from thor_core.files import repo_path, write_json_atomic
from thor_core.models import EMBEDDED_PREFIX
from thor_core.plots import plot_best_of_n_comparison, save_figure
from thor_core.sandbox import check_urls
from thor_core.stats import chi_square_2x2, pct

#: the paper's ladder: rung -> what it adds (notebook 04 evaluates T1-T5, and T5 with self-correction as T6)
RUNGS = {"T1": "base", "T2": "CoT RL (no tools)", "T3": "SFT only (TIRGen cold start)",
         "T4": "+ episode-level RL", "T5": "+ step-level RL (THOR)", "T6": "+ self-correction"}  # fmt: skip
MODEL_RUNGS = ("T1", "T2", "T3", "T4", "T5")  # T6 = T5 + self-correction
DEFAULT_RUNGS = {"T1": "embedded:qwen2.5-coder-0.5b-instruct", "T2": "outputs/cpu/03_rl-cot/final",
                 "T3": "outputs/cpu/02_sft/final", "T4": "outputs/cpu/03_rl-episode/final", "T5": "outputs/cpu/03_rl/final"}  # fmt: skip
MAKERS = {
    "T2": ("03_rl", "mode=cot"),
    "T3": ("02_sft", ""),
    "T4": ("03_rl", "mode=episode"),
    "T5": ("03_rl", "mode=thor"),
}
TAGS = ("cot", "tir", "tir-sc")


@dataclass
class RungsParams:
    """Parameters of notebook 04 (params/*/04_correction_inference.yaml)."""

    rungs: Any = field(default_factory=lambda: dict(DEFAULT_RUNGS), metadata={"help": "rung (T1..T5) -> model"})
    cot_rungs: list[str] = field(default_factory=lambda: ["T1", "T2"], metadata={"help": "rungs also run in CoT"})
    self_correction_rungs: list[str] = field(
        default_factory=lambda: ["T5"], metadata={"help": "rungs also run with self-correction (T5: gives T6)"}
    )
    backend: Literal["auto", "hf", "vllm"] = field(default="auto", metadata={"help": "auto: vllm where installed"})
    benchmarks: list[str] = field(default_factory=lambda: ["heldout", "math500_mmath"], metadata={"help": "heldout = generated"})  # fmt: skip
    heldout_n: int = field(default=10, metadata={"help": "generated held-out problems (benchmark heldout)"})
    heldout_seed: int = field(default=9001, metadata={"help": "their generator seed (notebooks 02/03: 9001)"})
    heldout_exclude: list[str] = field(default_factory=list, metadata={"help": "run folders whose recorded training problems the held-out set avoids (TIRGen's, RL's)"})  # fmt: skip
    limit: int | None = field(default=20, metadata={"help": "first N problems of each benchmark (null = all)"})
    k: int = field(default=4, metadata={"help": "samples per problem"})
    temperature: float = 0.6
    top_p: float = 1.0
    max_new_tokens: int = 768
    max_tool_rounds: int = 10
    correction_suffix_tokens: int = field(default=100, metadata={"help": "L_suf at inference (authors: 500)"})
    max_corrections: int = field(default=4, metadata={"help": "N_corr: retries per failing call (paper: 4)"})
    code_timeout_s: float | None = None
    sandbox_urls: list[str] | None = field(
        default=None,
        metadata={
            "help": "sandbox hosts: http://HOST:PORT each, running thor_core.sandbox.server (null: this machine)"
        },
    )
    best_of_n: list[int] = field(default_factory=lambda: [4, 8], metadata={"help": "N of best-of-N (those <= k)"})
    no_call_score: float = field(default=0.0, metadata={"help": "best-of-N score of an answer without code calls: 0 (the kit's: no execution evidence) or 1.0 (the authors' script)"})  # fmt: skip
    judge_base_url: str | None = field(
        default=None,
        metadata={"help": "optional LLM answer judge, an OpenAI-compatible server (e.g. http://host:8000/v1); "
                          "math-verify still grades, the judge's agreement is reported (thor_core.evaluation.judge)"},
    )  # fmt: skip
    judge_model: str | None = field(default=None, metadata={"help": "the judge's served model name (the paper: Qwen3-32B)"})  # fmt: skip
    show_trajectories: int = 2
    seed: int = 0
    run_dir: str | None = None

    def __post_init__(self) -> None:
        bad = []
        if not isinstance(self.rungs, dict) or not self.rungs:
            bad.append(f"rungs: expected a mapping rung -> model, got {self.rungs!r}")
        else:
            for rung, model in self.rungs.items():
                if rung not in MODEL_RUNGS:
                    hint = " (T6 is T5 with self-correction: list T5 in self_correction_rungs)" if rung == "T6" else ""
                    bad.append(f"rungs: unknown rung {rung!r}, allowed: {', '.join(MODEL_RUNGS)}{hint}")
                if not isinstance(model, str) or not model:
                    bad.append(f"rungs.{rung}: expected a model name or folder (str), got {model!r}")
        for name in ("cot_rungs", "self_correction_rungs"):  # rungs not in ``rungs`` are simply not run
            if extra := [r for r in getattr(self, name) if r not in MODEL_RUNGS]:
                bad.append(f"{name}: unknown rungs {extra}, allowed: {', '.join(MODEL_RUNGS)}")
        if self.k < 1:
            bad.append(f"k: must be >= 1, got {self.k}")
        if any(n < 1 for n in self.best_of_n):
            bad.append(f"best_of_n: each N must be >= 1, got {self.best_of_n}")
        if self.limit is not None and self.limit < 1:
            bad.append(f"limit: must be >= 1 or null, got {self.limit}")
        if "heldout" in self.benchmarks and self.heldout_n < 1:
            bad.append(f"heldout_n: must be >= 1 when benchmarks has heldout, got {self.heldout_n}")
        if not self.benchmarks:
            bad.append("benchmarks: name at least one (heldout; offline math500_mmath, aime24, aime25, cnmo; hub "
                       "math500, aime24_hf, aime25_full, amc23, minerva, olympiadbench)")  # fmt: skip
        if not 0.0 <= self.no_call_score <= 1.0:
            bad.append(
                f"no_call_score: an execution pass rate, in [0, 1] (0 or the authors' 1.0), got {self.no_call_score}"
            )
        if self.judge_model and not self.judge_base_url:
            bad.append("judge_model: set judge_base_url too (the server that serves it), or drop judge_model")
        try:
            check_urls(self.sandbox_urls)
        except ValueError as e:
            bad.append(str(e))
        if bad:
            raise ValueError("RungsParams: " + "; ".join(bad))

    def rollout_config(self) -> RolloutConfig:
        return rollout_config(self)

    def variants(self, rung: str) -> list[tuple[str, bool]]:
        """(mode, self_correction) pairs of a rung: CoT first when asked, TIR, then TIR with self-correction."""
        return (
            ([("cot", False)] if rung in self.cot_rungs else [])
            + [("tir", False)]
            + ([("tir", True)] if rung in self.self_correction_rungs else [])
        )

    def curve_n(self) -> int | None:
        """The largest asked N that k allows (best-of-N curves are computed for 1..N), or None."""
        return max((n for n in self.best_of_n if n <= self.k), default=None)

    def problems(self) -> dict[str, list]:
        """The generated ``heldout`` benchmark (the one held-out rule, ``thor_core.data.heldout``), when asked for."""
        if "heldout" not in self.benchmarks:
            return {}
        exclude = heldout.recorded_problems(self.heldout_exclude)
        return {"heldout": heldout.heldout_problems(self.heldout_n, self.heldout_seed, exclude)[0]}


def _looks_local(model: str) -> bool:
    return model.startswith(("outputs/", "/", "./", "../", "~")) or model.count("/") > 1


def local_model(model: str) -> str:
    """The name to load: a folder named relative to the repo (``outputs/<profile>/02_sft/final``) as its absolute
    path, since the notebook's kernel runs in notebooks/; an embedded model or a hub id as given."""
    if model.startswith(EMBEDDED_PREFIX):
        return model
    folder = repo_path(model)
    return str(folder) if folder.exists() else model


def skip_note(rung: str, model: str) -> str | None:
    """Why a rung cannot run (its model folder is missing) and what makes it; None when it can run."""
    if model.startswith(EMBEDDED_PREFIX):
        return None
    folder = repo_path(model)
    if folder.is_dir() and (folder / "config.json").is_file():
        return None
    if not folder.exists() and not _looks_local(model):
        return None  # a hub id: make_backend fetches it (or says why not)
    state = "has no config.json (unfinished run?)" if folder.exists() else "does not exist"
    notebook, extra = MAKERS.get(rung, ("", ""))
    parts = Path(model).parts
    profile = parts[1] if len(parts) > 2 and parts[0] == "outputs" else "<profile>"
    out = Path(model).parent.as_posix()
    if notebook == "03_rl":
        cmd = f"python -m thor_core.runs 03_rl --profile {profile} -p {extra} -p output_dir={out} --out-dir {out}"
    elif notebook:
        cmd = f"python -m thor_core.runs {notebook} --profile {profile} --out-dir {out}"
    else:
        cmd = "a finished training run (point rungs." + rung + " at its final/ folder)"
    return f"{rung} ({RUNGS[rung]}) skipped: model folder {folder} {state}; made by `{cmd}`"


def plan(p: RungsParams) -> list[dict[str, Any]]:
    """One entry per rung in ladder order: rung, model, the run tags, and a skip note (None when it runs)."""
    return [
        {"rung": r, "model": p.rungs[r], "tags": [evaluation.run_tag(m, sc) for m, sc in p.variants(r)],
         "skipped": skip_note(r, p.rungs[r])}
        for r in MODEL_RUNGS if r in p.rungs
    ]  # fmt: skip


def evaluate_rungs(p: RungsParams, out_dir: str | os.PathLike, sandbox, grader=None, progress: bool = True):
    """Evaluate every runnable rung of ``plan(p)`` into ``out_dir/<rung>/``; rung -> tag -> EvalResult.

    Skipped rungs are printed, never run with something else; ``rungs.json`` records the plan.
    """
    out_dir, steps, results = Path(out_dir), plan(p), {}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "rungs.json", steps)
    for step in steps:
        if step["skipped"]:
            print(step["skipped"], flush=True)
            continue
        rung = step["rung"]
        print(f"{rung} ({RUNGS[rung]}): {step['model']}, runs {step['tags']}", flush=True)
        with make_backend(p.backend, local_model(step["model"])) as backend:
            for mode, sc in p.variants(rung):
                r = evaluation.evaluate(backend, sandbox if mode == "tir" else None, p.benchmarks, p.k, mode, sc,
                                        p.rollout_config(), out_dir / rung, limit=p.limit, best_of_n=p.curve_n(),
                                        grader=grader, progress=progress, problems=p.problems(),
                                        model=local_model(step["model"]), no_call_score=p.no_call_score)  # fmt: skip
                results.setdefault(rung, {})[r.tag] = r
                s = r.summary
                print(f"  {rung} {r.tag}: Avg@{p.k} {pct(s['macro']['avg@k'])}% (mean of {s['macro']['benchmarks']} "
                      f"benchmarks) over {s['overall']['samples']} answers; {s['new']} new, {s['resumed']} resumed, "
                      f"{s['wall_s']} s", flush=True)  # fmt: skip
    return results


def load_summaries(out_dir: str | os.PathLike) -> dict[str, dict[str, dict[str, Any]]]:
    """rung -> tag -> summary, from ``<out_dir>/<rung>/summary-<tag>.json`` (no model needed)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for rung in MODEL_RUNGS:
        for tag in TAGS:
            path = Path(out_dir) / rung / f"summary-{tag}.json"
            if path.is_file():
                out.setdefault(rung, {})[tag] = json.loads(path.read_text())
    return out


# ------------------------------------------------------------------ tables


def _label(rung: str, tag: str) -> str:
    return "T6 (T5 + self-correction)" if rung == "T5" and tag == "tir-sc" else f"{rung} ({RUNGS[rung]})"


def _rows(summaries):
    return [(rung, tag, s) for rung, tags in summaries.items() for tag in TAGS if (s := tags.get(tag))]


def _macro(s: dict[str, Any]) -> dict[str, Any]:
    """The mean over benchmarks of a summary (one written before ``macro`` existed: its ``macro_avg@k``, no interval)."""
    return s.get("macro") or {"avg@k": s.get("macro_avg@k"), "benchmarks": len(s["benchmarks"])}


def _benchmarks(summaries) -> list[str]:
    return list(dict.fromkeys(b for _, _, s in _rows(summaries) for b in s["benchmarks"]))


def accuracy_table(summaries) -> str:
    """Markdown, the paper's Table 1 layout: Avg@k % [95% bootstrap CI] per rung and mode, a column per benchmark and
    the mean over benchmarks (each weighs the same, as the paper's average), tokens and wall time."""
    names = _benchmarks(summaries)
    mean = f"mean of {len(names)}" if len(names) > 1 else "all"
    lines = ["| rung | mode | k | " + " | ".join(names) + f" | **{mean}** | policy tokens / answer | wall s |",
             "|---|---|---|" + "---|" * (len(names) + 3)]  # fmt: skip
    for rung, tag, s in _rows(summaries):
        cells = [metric_cell(s["benchmarks"][b], "avg@k") if b in s["benchmarks"] else "-" for b in names]
        tokens = s["overall"]["mean_policy_tokens"]
        lines.append(f"| {_label(rung, tag)} | {tag} | {s['k']} | " + " | ".join(cells) + f" | **{metric_cell(_macro(s), 'avg@k')}** | "
                     f"{'-' if tokens is None else f'{tokens:.0f}'} | {s.get('wall_s_total', s['wall_s'])} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def metrics_table(summaries) -> str:
    """Markdown: Avg@k, pass@k and maj@k % [95% bootstrap CI over problems], a row per benchmark, rung and mode
    (benchmark by benchmark, so a benchmark's rungs sit together), then the mean over benchmarks per rung and mode."""
    lines = [
        "| benchmark | rung | mode | problems | answers | Avg@k | pass@k | maj@k |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names, rows = _benchmarks(summaries), _rows(summaries)
    for b in names:
        for rung, tag, s in rows:
            if m := s["benchmarks"].get(b):
                cells = " | ".join(metric_cell(m, x) for x in ("avg@k", "pass@k", "maj@k"))
                lines.append(f"| {b} | {_label(rung, tag)} | {tag} | {m['problems']} | {m['samples']} | {cells} |")
    if len(names) > 1:
        for rung, tag, s in rows:
            cells = " | ".join(metric_cell(_macro(s), x) for x in ("avg@k", "pass@k", "maj@k"))
            lines.append(f"| **mean of {_macro(s)['benchmarks']}** | {_label(rung, tag)} | {tag} | | | {cells} |")
    note = ("\nk samples per problem (the `k` column above); pass@k is the unbiased estimator, maj@k the majority "
            "answer of each problem's k samples. Intervals: 95% percentile bootstrap over problems (a problem's "
            "samples resampled together); the mean's resamples each benchmark within itself.\n")  # fmt: skip
    return "\n".join(lines) + "\n" + note


def best_of_n_table(summaries, ns: list[int]) -> str:
    """Markdown: accuracy % of execution pass rate vs majority vote at each N (a note where k < N)."""
    head = "| rung | mode | k | single sample | " + " | ".join(
        f"N={n}: exec pass rate | N={n}: majority vote" for n in ns
    )
    lines = [head + " |", "|---|---|---|---|" + "---|---|" * len(ns)]
    for rung, tag, s in _rows(summaries):
        curve = {r["n"]: r for r in s.get("best_of_n") or []}
        cells = []
        for n in ns:
            row = curve.get(n)
            cells += [f"{pct(row['exec_pass_rate'])} ({row['problems']} q)", pct(row["majority_vote"])] if row else [f"needs k >= {n}", "-"]  # fmt: skip
        single = pct(curve[1]["single"]) if 1 in curve else pct(s["overall"]["avg@k"])
        lines.append(f"| {_label(rung, tag)} | {tag} | {s['k']} | {single} | " + " | ".join(cells) + " |")
    rules = {no_call_note(s) for _, _, s in _rows(summaries)}
    return "\n".join(lines) + "\n\nAll benchmarks pooled. " + " / ".join(sorted(rules)) + "\n"


def correction_cost_table(summaries) -> str:
    """Markdown: tir-sc against tir on the same rung: accuracy, policy tokens and wall time, with the extra."""
    lines = ["| rung | Avg@k tir -> tir-sc (%) | policy tokens / answer tir -> tir-sc (extra) | corrections / answer "
             "| wall s tir -> tir-sc (extra) | s / answer tir -> tir-sc |", "|---|---|---|---|---|---|"]  # fmt: skip
    for rung, tags in summaries.items():
        a, b = tags.get("tir"), tags.get("tir-sc")
        if not (a and b):
            continue
        ta, tb = a["overall"]["mean_policy_tokens"] or 0.0, b["overall"]["mean_policy_tokens"] or 0.0
        wa, wb = a.get("wall_s_total", a["wall_s"]), b.get("wall_s_total", b["wall_s"])
        extra_t = f"{tb - ta:+.0f}" + (f", {100 * (tb - ta) / ta:+.0f}%" if ta else "")
        extra_w = f"{wb - wa:+.1f}" + (f", {100 * (wb - wa) / wa:+.0f}%" if wa else "")
        per = f"{wa / a['overall']['samples']:.2f} -> {wb / b['overall']['samples']:.2f}"
        lines.append(f"| {rung} | {pct(a['overall']['avg@k'])} -> {pct(b['overall']['avg@k'])} | {ta:.0f} -> {tb:.0f} "
                     f"({extra_t}) | {b['overall']['corrections_per_answer'] or 0:.2f} | {wa} -> {wb} ({extra_w}) | {per} |")  # fmt: skip
    if len(lines) == 2:
        return "No rung ran both tir and tir-sc (see self_correction_rungs).\n"
    note = ("\nTokens: kept policy tokens; the text self-correction discarded is not counted, its generation "
            "time is in the wall time (whole runs, resumed calls included, so compare runs made in one go).\n")  # fmt: skip
    return "\n".join(lines) + "\n" + note


def tool_chi_square_table(summaries) -> str:
    """Markdown: per rung and TIR mode, (all calls ok / a call failed) x (correct / wrong) over answers with calls."""
    lines = ["| rung | mode | ok & correct | ok & wrong | failed & correct | failed & wrong | n | chi2 (df 1) | p |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for rung, tag, s in _rows(summaries):
        if tag == "cot":
            continue
        t = s["tool_vs_correct"]
        test = chi_square_2x2(t["ok_correct"], t["ok_wrong"], t["fail_correct"], t["fail_wrong"])
        stat = f"{test[0]:.2f} | {test[1]:.3g}" if test else "undefined (an empty row or column) | -"
        lines.append(f"| {_label(rung, tag)} | {tag} | {t['ok_correct']} | {t['ok_wrong']} | {t['fail_correct']} | "
                     f"{t['fail_wrong']} | {t['n']} | {stat} |")  # fmt: skip
    return "\n".join(lines) + "\n\nPearson's chi-square without continuity correction; p from erfc(sqrt(chi2 / 2)).\n"


# ----------------------------------------------------------------- figures


def plot_accuracy(summaries, out_dir: str | os.PathLike) -> Path:
    """Bars: Avg@k per rung and mode, the mean over benchmarks, with its 95% bootstrap interval; answers above each bar."""
    rows = _rows(summaries)
    fig = Figure(figsize=(max(5.0, 0.9 * len(rows) + 2), 3.8))
    ax = fig.subplots()
    for i, (_, tag, s) in enumerate(rows):
        m = _macro(s)
        acc = 100 * (m["avg@k"] or 0.0)
        lo, hi = m.get("avg@k_ci") or (acc / 100, acc / 100)
        ax.bar(i, acc, color=f"C{TAGS.index(tag)}", label=tag if tag not in [t for _, t, _ in rows[:i]] else None)
        ax.errorbar(i, acc, [[acc - 100 * lo], [100 * hi - acc]], color="black", capsize=3, lw=1)
        ax.text(i, 100 * hi + 1, f"{acc:.0f}\nn={s['overall']['samples']}", ha="center", fontsize=7)
    ax.set_xticks(
        range(len(rows)), ["T6" if (r, t) == ("T5", "tir-sc") else f"{r}\n{t}" for r, t, _ in rows], fontsize=8
    )
    ax.set_ylabel("Avg@k (%)")
    ax.set_ylim(0, 105)
    n_bench = len(_benchmarks(summaries))
    what = f"mean of {n_bench} benchmarks" if n_bench > 1 else "one benchmark"
    ax.set_title(f"Avg@k per rung and mode ({what}, 95% bootstrap CI)", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, Path(out_dir) / "rungs_accuracy.png")


def plot_best_of_n(summaries, out_dir: str | os.PathLike) -> Path | None:
    """Execution pass rate (solid) and majority vote (dashed) against N per rung and mode; None without curves."""
    curves = [(rung, tag, s["best_of_n"]) for rung, tag, s in _rows(summaries) if s.get("best_of_n")]
    if not curves:
        return None
    labelled = [(f"{rung} {tag}", rows) for rung, tag, rows in curves]
    return plot_best_of_n_comparison(labelled, Path(out_dir) / "rungs_best_of_n.png")


def save_figures(summaries, out_dir: str | os.PathLike) -> dict[str, Path]:
    figures = {"accuracy": plot_accuracy(summaries, out_dir), "best_of_n": plot_best_of_n(summaries, out_dir)}
    return {k: v for k, v in figures.items() if v is not None}


def plan_markdown(steps: list[dict[str, Any]]) -> str:
    """Markdown list: each rung's model and runs, or its skip note."""
    return "".join(
        f"- {s['skipped']}\n" if s["skipped"] else f"- {s['rung']}: `{s['model']}`, runs {', '.join(s['tags'])}\n"
        for s in steps
    )


def report_markdown(
    summaries, steps: list[dict[str, Any]], ns: list[int], figures: dict[str, Path] | None = None
) -> str:
    """The whole report: the plan (skips included), the tables, the figures."""
    pictures = "".join(f"![{name}]({Path(path).name})\n" for name, path in (figures or {}).items())
    return (f"# Notebook 04: the ladder's rungs on held-out benchmarks\n\n{plan_markdown(steps)}\n"
            f"## Accuracy per benchmark (Avg@k %, 95% bootstrap CI)\n\n{accuracy_table(summaries)}\n"
            f"## Avg@k, pass@k and maj@k per benchmark\n\n{metrics_table(summaries)}\n"
            f"## Best-of-N\n\n{best_of_n_table(summaries, ns)}\n"
            f"## Cost of self-correction\n\n{correction_cost_table(summaries)}\n"
            f"## Tool success x correctness\n\n{tool_chi_square_table(summaries)}\n{pictures}")  # fmt: skip


def write_report(summaries, steps, ns, out_dir: str | os.PathLike, figures=None) -> Path:
    """``summary.json`` (rung -> tag -> summary) and ``summary.md`` in ``out_dir``; returns the Markdown path."""
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "summary.json", summaries)
    (out_dir / "summary.md").write_text(report_markdown(summaries, steps, ns, figures), encoding="utf-8")
    return out_dir / "summary.md"
