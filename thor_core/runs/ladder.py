"""Notebook 05's pieces: the ablation ladder T1..T6, its paired tests, tables and figures, from recorded files only.

Covered:

- ``RUNGS`` and ``SUITES``: the declarative mapping rung -> evaluation folder
  (under a profile's runs root) and run tag (``records-<tag>.jsonl``: ``tir``,
  ``tir-sc`` or ``cot``). A suite is one set of problems and seeds, so rungs of
  one suite can be paired. ``04_correction_inference`` is the target (notebook
  04 writes ``04_correction_inference/<rung>/``; T1 and T2 are its no-tools
  (CoT) runs, as in the paper's ablation; T6 is T5's checkpoint with
  self-correction, ``T5/records-tir-sc.jsonl``); ``heldout`` is what notebooks
  02 and 03 write today (their before/after checks on the same held-out
  problems; 03's ``eval-rl`` fills T2, T4 or T5 by the ``mode`` in its
  ``rl_params.json``); ``math500`` the CLI runs ``math500-base``/``math500-sft``.
- ``build_ladders``: per suite and rung, accuracy over graded answers with n
  and a 95% Wilson interval, tokens per answer, and an exact McNemar test
  between adjacent present rungs on the (question_id, sample) keys both hold.
  A rung without records is "not run", with what makes it; nothing is invented.
- ``PAPER``: the paper's numbers (docs/METHOD.md, "What the paper reports"),
  shown beside ours in ``ladder_table`` and as markers in ``plot_ladder``.
- ``benchmark_table``: per rung, Avg@k on each benchmark and their mean (each
  benchmark weighs the same, the paper's "average of six"), with 95% bootstrap
  intervals over problems (``thor_core.evaluation.metrics.summarize``), beside
  the paper's Table 1 per benchmark as far as docs/METHOD.md records it
  (``PAPER_TABLE1``: MATH500 only; ``PAPER_BENCHMARKS`` maps our benchmark
  names onto the paper's).
- Figures (``matplotlib.figure.Figure``, PNG and PDF in the run folder):
  the ladder with CIs, training curves (SFT loss, RL reward, tool success,
  step-level pass rate; NaN steps skipped), the TIRGen funnel and code-call
  histogram (``thor_core.tirgen.report.plot_funnel``), tokens per answer, best-of-N.
- ``missing``: each absent input and the command that makes it.

Not covered: model calls of any kind, per-benchmark paired tests (``ladder_table``
and the McNemar tests pool a rung's benchmarks), clustering of several samples
of one question in the pooled table (its Wilson CI and the p-values treat them
as independent, so they are optimistic when k > 1; ``benchmark_table``'s
bootstrap does not).
Files are only read; nothing is written outside ``out_dir``.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from thor_core.evaluation.metrics import best_of_n_curve, summarize
from thor_core.evaluation.report import metric_cell
from thor_core.evaluation.rungs import RUNGS
from thor_core.files import read_jsonl_rows, repo_path
from thor_core.plots import plot_best_of_n_comparison, save_figure
from thor_core.record import Trajectory, iter_jsonl
from thor_core.rl.run import METRICS
from thor_core.sft.folder import LOSS_LOG
from thor_core.stats import paired_outcomes, pct, wilson_interval
from thor_core.tirgen.report import plot_funnel

NB = "`python -m thor_core.runs {} --profile {{profile}}`"


@dataclass(frozen=True)
class Source:
    """Where a rung's graded records are: ``<runs_root>/<folder>/records-<tag>.jsonl``."""

    folder: str
    tag: str  # tir, tir-sc or cot
    makes: str  # the command that writes it ({profile} filled in)
    rl_mode: str | None = None  # only when <folder>/../rl_params.json has this mode


_NB04 = NB.format("04_correction_inference") + " (a folder per rung)"
_NB03 = NB.format("03_rl") + " with mode: {mode} in params/{profile}/03_rl.yaml"
SUITES: dict[str, dict[str, Source]] = {
    "04_correction_inference": {
        **{r: Source(f"04_correction_inference/{r}", "cot" if r in ("T1", "T2") else "tir", _NB04) for r in RUNGS if r != "T6"},
        "T6": Source("04_correction_inference/T5", "tir-sc", _NB04),
    },
    "heldout": {
        "T1": Source("02_sft/eval-base", "tir", NB.format("02_sft")),
        "T2": Source("03_rl/eval-rl", "cot", _NB03.replace("{mode}", "cot"), rl_mode="cot"),
        "T3": Source("02_sft/eval-sft", "tir", NB.format("02_sft")),
        "T4": Source("03_rl/eval-rl", "tir", _NB03.replace("{mode}", "episode"), rl_mode="episode"),
        "T5": Source("03_rl/eval-rl", "tir", _NB03.replace("{mode}", "thor"), rl_mode="thor"),
    },
    "math500": {
        r: Source(f"math500-{s}", "tir", f"`python -m thor_core.evaluation --model <{s} model> --out-dir outputs/{{profile}}/math500-{s}`")
        for r, s in (("T1", "base"), ("T3", "sft"))
    },
}  # fmt: skip

# docs/METHOD.md, "What the paper reports": accuracy (%), Avg@4 at temperature 0.6.
# The paper's Table 1 per benchmark, as far as the docs record it: MATH500 only (AIME24, AIME25, AMC23, Minerva and
# OlympiadBench are not recorded here, so ``benchmark_table`` shows "-" for them).
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "Qwen2.5-Math-1.5B, TIR prompt": {"MATH500": 40.0},
    "THOR-1.5B": {"MATH500": 78.2},
    "Qwen2.5-Math-7B, TIR prompt": {"MATH500": 64.7},
    "THOR-7B": {"MATH500": 87.5},
}
# our benchmark name -> the paper's (math500_mmath: 311 of MATH500's 500; aime25: 15 of AIME 2025's 30)
PAPER_BENCHMARKS = {"math500": "MATH500", "math500_mmath": "MATH500", "aime24_hf": "AIME24", "aime24": "AIME24",
                    "aime25_full": "AIME25", "aime25": "AIME25", "amc23": "AMC23", "minerva": "Minerva",
                    "olympiadbench": "OlympiadBench"}  # fmt: skip
PAPER_SIX = ("MATH500", "AIME24", "AIME25", "AMC23", "Minerva", "OlympiadBench")
_ABLATION_7B = "paper Qwen2.5-Math-7B (6-benchmark avg)"
PAPER: dict[str, dict[str, float]] = {
    _ABLATION_7B: dict(zip(RUNGS, (24.7, 41.4, 35.7, 58.1, 59.7, 61.2))),
    "paper Qwen3-8B thinking (6-benchmark avg)": dict(zip(RUNGS, (74.5, 74.9, 71.4, 77.7, 78.5, 79.8))),
    **{f"paper Qwen2.5-Math-{size} MATH500 (T1: TIR prompt, T6: THOR-{size})": {
        "T1": PAPER_TABLE1[f"Qwen2.5-Math-{size}, TIR prompt"]["MATH500"], "T6": PAPER_TABLE1[f"THOR-{size}"]["MATH500"]}
       for size in ("1.5B", "7B")},
}  # fmt: skip
PAPER_BEST_OF_N = {1: 61.2, 4: 61.8, 8: 63.3}  # THOR-7B, execution pass rate, 6-benchmark avg
PAPER_TOKENS = "paper: THOR-7B 1019 tokens per answer, its base model 1083"


@dataclass
class AnalysisParams:
    """Parameters of notebook 05 (params/*/05_analysis_figures.yaml)."""

    profile: str = field(default="cpu", metadata={"help": "profile whose run folders are read"})
    runs_root: str | None = field(
        default=None, metadata={"help": "folder of the run folders (null: outputs/<profile>)"}
    )
    run_dir: str | None = field(default=None, metadata={"help": "where figures go (null: outputs/<profile>/05_analysis_figures)"})  # fmt: skip
    study_root: str | None = field(default=None, metadata={"help": "the thor vs episode study's folder (python -m thor_core.runs study, e.g. outputs/study); null: not shown"})  # fmt: skip

    def root(self) -> Path:
        return repo_path(self.runs_root or f"outputs/{self.profile}")

    def out_dir(self) -> Path:
        return repo_path(self.run_dir or f"outputs/{self.profile}/05_analysis_figures")


@dataclass
class Rung:
    """One rung of one suite: its graded records by (question_id, sample) and what they give."""

    rung: str
    source: Source | None
    records: dict[tuple[str, int], Trajectory] = field(default_factory=dict)
    why: str = ""  # where the records come from, or why the rung is not run and what makes it

    def __post_init__(self) -> None:
        self.graded = {k: bool(r.correct) for k, r in self.records.items() if r.correct is not None}
        self.n, hits = len(self.graded), sum(self.graded.values())
        self.present = self.n > 0
        self.accuracy = hits / self.n if self.n else None
        self.ci = wilson_interval(hits, self.n) if self.n else None
        self.questions = len({q for q, _ in self.graded})
        recs = self.records.values()
        self.tokens = sum(r.n_policy_tokens for r in recs) / len(recs) if recs else None
        graded = [r for r in recs if r.correct is not None]
        per_question = Counter(r.question_id for r in graded)
        # per benchmark and their mean (Avg@k, pass@k, maj@k with bootstrap intervals), k = the most samples of a question
        self.summary = summarize(graded, max(per_question.values())) if graded else None


@dataclass
class Ladder:
    suite: str
    rungs: list[Rung]
    tests: list[dict[str, Any]]

    @property
    def present(self) -> list[Rung]:
        return [r for r in self.rungs if r.present]


def read_records(path: Path) -> dict[tuple[str, int], Trajectory]:
    """Records by (question_id, sample), first one kept; a torn last line is skipped. Never writes."""
    out: dict[tuple[str, int], Trajectory] = {}
    for r in iter_jsonl(path):
        out.setdefault((r.question_id, int(r.metadata.get("sample", 0))), r)
    return out


def load_rung(root: Path, rung: str, source: Source | None, profile: str) -> Rung:
    """One rung's records, or a "not run" rung saying what is missing and which command makes it."""
    if source is None:
        return Rung(rung, None, why="not run (no source in this suite; see suite 04_correction_inference)")
    folder, makes = root / source.folder, source.makes.format(profile=profile)
    path = folder / f"records-{source.tag}.jsonl"
    note = ""
    if source.rl_mode is not None:
        params = folder.parent / "rl_params.json"
        rl = json.loads(params.read_text()) if params.is_file() else {}
        mode, note = rl.get("mode"), f" (RL started from {rl.get('model')})"
        if mode != source.rl_mode:
            ran = f"{folder.parent.name} ran mode {mode!r}" if mode else f"no {params.name} in {folder.parent}"
            return Rung(rung, source, why=f"not run ({ran}); made by {makes}")
    if not path.is_file():
        return Rung(rung, source, why=f"not run (no {path}); made by {makes}")
    found = Rung(rung, source, read_records(path), why=f"{source.folder}/{path.name}{note}")
    if not found.present:
        found.why = f"not run ({path} holds no graded record); made by {makes}"
    return found


def build_ladder(root: str | os.PathLike, suite: str, profile: str = "cpu") -> Ladder:
    """The ladder of one suite, with McNemar tests between adjacent present rungs on their shared keys."""
    rungs = [load_rung(Path(root), r, SUITES[suite].get(r), profile) for r in RUNGS]
    present, tests = [r for r in rungs if r.present], []
    for a, b in zip(present, present[1:]):
        tests.append({"from": a.rung, "to": b.rung, **paired_outcomes(a.graded, b.graded)})
    return Ladder(suite, rungs, tests)


def build_ladders(root: str | os.PathLike, profile: str = "cpu") -> list[Ladder]:
    """Every suite's ladder (suites with no present rung included, so the tables say what is missing)."""
    return [build_ladder(root, suite, profile) for suite in SUITES]


def ladder_table(ladder: Ladder) -> str:
    """Markdown: ours (accuracy %, 95% Wilson CI, n) beside the paper's numbers per rung."""
    head = ["rung", "stage", "ours: accuracy % [95% CI]", "n answers (questions)", "tokens / answer", "records"]
    lines = ["| " + " | ".join(head + list(PAPER)) + " |", "|" + "---|" * (len(head) + len(PAPER))]
    for r in ladder.rungs:
        papers = [str(PAPER[k].get(r.rung, "-")) for k in PAPER]
        if r.present:
            lo, hi = r.ci
            ours = [f"**{pct(r.accuracy)}** [{pct(lo)}, {pct(hi)}]", f"{r.n} ({r.questions})", f"{r.tokens:.0f}"]
        else:
            ours = ["not run", "-", "-"]
        lines.append(f"| {r.rung} | {RUNGS[r.rung]} | " + " | ".join(ours + [r.why] + papers) + " |")
    note = (f"\nOurs: suite `{ladder.suite}`, graded answers pooled over its problems and samples. The paper's "
            "columns are other models on other benchmarks (docs/METHOD.md): compare the steps, not the levels.\n")  # fmt: skip
    return "\n".join(lines) + "\n" + note


def tests_table(ladder: Ladder) -> str:
    """Markdown: the paired exact McNemar tests between adjacent present rungs."""
    if not ladder.tests:
        return f"no paired test in suite {ladder.suite} (fewer than two rungs present)\n"
    lines = ["| from -> to | pairs | unpaired (left out) | right only before | right only after | accuracy before -> after (%) | McNemar p |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in ladder.tests:
        change = f"{pct(t['rate_first'])} -> {pct(t['rate_second'])}" if t["n"] else "-"
        lines.append(f"| {t['from']} -> {t['to']} | {t['n']} | {t['unpaired']} | {t['only_first']} | "
                     f"{t['only_second']} | {change} | {t['p_value']:.3g} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def benchmark_table(ladder: Ladder) -> str:
    """Markdown: Avg@k % [95% bootstrap CI] per rung on each benchmark and their mean, beside the paper's Table 1 per
    benchmark (``PAPER_TABLE1``, as far as recorded) and its ablation's mean of six (Qwen2.5-Math-7B)."""
    present = ladder.present
    names = list(dict.fromkeys(b for r in present for b in r.summary["benchmarks"]))
    heads = [f"{b} (paper: {PAPER_BENCHMARKS[b]})" if b in PAPER_BENCHMARKS else b for b in names]
    mean = f"mean of {len(names)}" if len(names) > 1 else "all"
    lines = ["| rung | stage | k | " + " | ".join(heads) + f" | **{mean}** | paper ablation, 7B: mean of 6 |",
             "|---|---|---|" + "---|" * (len(names) + 2)]  # fmt: skip
    for r in ladder.rungs:
        paper = str(PAPER[_ABLATION_7B].get(r.rung, "-"))
        if not r.present:
            lines.append(
                f"| {r.rung} | {RUNGS[r.rung]} | | " + " | ".join(["not run"] * len(names)) + f" | - | {paper} |"
            )
            continue
        s = r.summary
        cells = [metric_cell(s["benchmarks"][b], "avg@k") if b in s["benchmarks"] else "-" for b in names]
        macro = s["macro"] if s["macro"]["benchmarks"] > 1 else s["overall"]
        lines.append(f"| {r.rung} | {RUNGS[r.rung]} | {s['k']} | " + " | ".join(cells) + f" | **{metric_cell(macro, 'avg@k')}** | {paper} |")  # fmt: skip
    for label, values in PAPER_TABLE1.items():
        cells = [str(values.get(PAPER_BENCHMARKS.get(b, ""), "-")) for b in names]
        lines.append(f"| paper Table 1 | {label} | 4 | " + " | ".join(cells) + " | - | - |")
    recorded = sorted({b for v in PAPER_TABLE1.values() for b in v})
    missing = [b for b in PAPER_SIX if b not in recorded]
    note = (f"\nOurs: Avg@k per benchmark, 95% percentile bootstrap over problems (a problem's samples together); the "
            "mean weighs each benchmark the same (the paper's average), its interval resamples within each benchmark. "
            f"The paper's Table 1 as recorded in docs/METHOD.md: {', '.join(recorded)}; not recorded: "
            f"{', '.join(missing)} (\"-\"). math500_mmath and aime25 are subsets (311 of 500, 15 of 30).\n")  # fmt: skip
    return "\n".join(lines) + "\n" + note


def ladders_markdown(ladders: list[Ladder]) -> str:
    """Each suite that has a rung: its ladder table, paired tests and the per-benchmark table (for notebook 05 and
    the demo report)."""
    shown = [lad for lad in ladders if lad.present]
    parts = [f"### Suite `{lad.suite}`\n\n{ladder_table(lad)}\n{tests_table(lad)}\n"
             f"#### Per benchmark\n\n{benchmark_table(lad)}" for lad in shown]  # fmt: skip
    return "\n".join(parts) or "No rung of any suite has records yet (see what is missing above).\n"


# ------------------------------------------------------------------ figures


def plot_ladder(ladders: list[Ladder], out_dir: str | os.PathLike) -> Path:
    """Our accuracy per rung and suite (bars with 95% Wilson CIs; "not run" marked), the paper's as markers."""
    shown = [lad for lad in ladders if lad.present] or ladders[:1]
    fig = Figure(figsize=(9, 4.2))
    ax, xs, width = fig.subplots(), range(len(RUNGS)), 0.8 / len(shown)
    for i, lad in enumerate(shown):
        offset, labelled = (i - (len(shown) - 1) / 2) * width, False
        for j, r in enumerate(lad.rungs):
            x = j + offset
            if not r.present:
                ax.text(x, 1, "not run", rotation=90, ha="center", va="bottom", fontsize=7, color="#57606a")
                continue
            lo, hi = r.ci
            acc = 100 * r.accuracy
            label, labelled = (None if labelled else f"ours: {lad.suite}"), True
            ax.bar(x, acc, width, color=f"C{i}", label=label)
            ax.errorbar(x, acc, [[acc - 100 * lo], [100 * hi - acc]], color="black", capsize=3, lw=1)
            ax.text(x, 100 * hi + 1, f"{acc:.0f}\nn={r.n}", ha="center", fontsize=6)
    for k, (name, values) in enumerate(PAPER.items()):
        pts = [(j, values[r]) for j, r in enumerate(RUNGS) if r in values]
        ax.plot(*zip(*pts), marker="Dso^"[k], ls=":" if len(pts) > 2 else "", color=f"C{len(shown) + k}", label=name)
    ax.set_xticks(list(xs), [f"{r}\n" + textwrap.fill(RUNGS[r], 16) for r in RUNGS], fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Ablation ladder: ours (bars, 95% Wilson CI) and the paper's (markers)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    return save_figure(fig, Path(out_dir) / "ladder.png", pdf=True)


def _finite(rows: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]


def plot_training_curves(root: str | os.PathLike, out_dir: str | os.PathLike, profile: str = "cpu") -> Path:
    """SFT loss (02_sft/loss.jsonl) and RL reward, tool success, step-level pass rate (03_rl/metrics.jsonl)."""
    root = Path(root)
    sft, rl = read_jsonl_rows(root / "02_sft" / LOSS_LOG), read_jsonl_rows(root / "03_rl" / METRICS)
    panels = [(sft, "loss", "SFT loss", "02_sft"), (rl, "reward", "RL episode reward", "03_rl"),
              (rl, "tool_success", "RL tool-call success", "03_rl"), (rl, "step_pass_rate", "RL step-level pass rate", "03_rl")]  # fmt: skip
    fig = Figure(figsize=(13, 3))
    for ax, (rows, key, title, nb) in zip(fig.subplots(1, 4), panels):
        pts = _finite(rows, key)
        if pts:
            ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None)
        else:
            ax.text(0.5, 0.5, f"no records\n({NB.format(nb).format(profile=profile).strip('`')})", ha="center", va="center",
                    fontsize=6, transform=ax.transAxes, wrap=True)  # fmt: skip
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / "training_curves.png", pdf=True)


def plot_tirgen(root: str | os.PathLike, out_dir: str | os.PathLike) -> Path | None:
    """The TIRGen funnel and code-call histogram from 01_tirgen/stats.json (thor_core.tirgen.report.plot_funnel); None without it."""
    stats = Path(root) / "01_tirgen" / "stats.json"
    if not stats.is_file():
        return None
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return plot_funnel(json.loads(stats.read_text()), Path(out_dir) / "tirgen_funnel.png")[0]


def plot_tokens(ladders: list[Ladder], out_dir: str | os.PathLike) -> Path:
    """Mean policy tokens per answer, per rung and suite (inserted tool output not counted)."""
    fig = Figure(figsize=(8, 3.4))
    ax = fig.subplots()
    shown = [lad for lad in ladders if lad.present]
    width = 0.8 / max(len(shown), 1)
    for i, lad in enumerate(shown):
        pts = [(j, r.tokens) for j, r in enumerate(lad.rungs) if r.present]
        bars = ax.bar([j + (i - (len(shown) - 1) / 2) * width for j, _ in pts], [t for _, t in pts], width,
                      label=lad.suite, color=f"C{i}")  # fmt: skip
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(RUNGS)), list(RUNGS))
    ax.set_ylabel("policy tokens per answer")
    ax.set_title(f"Tokens per answer ({PAPER_TOKENS})", fontsize=9)
    if shown:
        ax.legend(fontsize=7)
    return save_figure(fig, Path(out_dir) / "tokens.png", pdf=True)


def best_of_n(ladder: Ladder) -> dict[str, list[dict[str, Any]]]:
    """Rung -> best-of-N curve (``thor_core.evaluation.metrics.best_of_n_curve``) for rungs with 2+ samples of every question."""
    curves = {}
    for r in ladder.present:
        per_q: dict[str, int] = {}
        for q, _ in r.records:
            per_q[q] = per_q.get(q, 0) + 1
        if (k := min(per_q.values())) >= 2:
            curves[r.rung] = best_of_n_curve(list(r.records.values()), min(k, 8))
    return curves


def plot_best_of_n(ladders: list[Ladder], out_dir: str | os.PathLike) -> Path | None:
    """Execution pass rate (solid) and majority vote (dashed) against N per rung; None when no rung has k >= 2."""
    curves = [(lad.suite, rung, c) for lad in ladders for rung, c in best_of_n(lad).items()]
    if not curves:
        return None
    labelled = [(f"{suite} {rung}", rows) for suite, rung, rows in curves]
    paper = ("paper THOR-7B (6-benchmark avg)", PAPER_BEST_OF_N)
    return plot_best_of_n_comparison(labelled, Path(out_dir) / "best_of_n.png", paper, pdf=True)


def save_figures(root: str | os.PathLike, ladders: list[Ladder], out_dir: str | os.PathLike, profile: str = "cpu") -> dict[str, Path]:  # fmt: skip
    """Every figure there is data for: name -> PNG path (a PDF beside each)."""
    figures = {"ladder": plot_ladder(ladders, out_dir), "training_curves": plot_training_curves(root, out_dir, profile),
               "tirgen_funnel": plot_tirgen(root, out_dir), "tokens": plot_tokens(ladders, out_dir),
               "best_of_n": plot_best_of_n(ladders, out_dir)}  # fmt: skip
    return {k: v for k, v in figures.items() if v is not None}


def missing(root: str | os.PathLike, ladders: list[Ladder], profile: str = "cpu") -> str:
    """Markdown list of the inputs not found and the command that makes each; empty when nothing is missing."""
    root, lines = Path(root), []
    for path, nb, what in (("01_tirgen/stats.json", "01_tirgen", "TIRGen funnel"), ("02_sft/loss.jsonl", "02_sft", "SFT loss"),
                           ("03_rl/metrics.jsonl", "03_rl", "RL curves")):  # fmt: skip
        if not (root / path).is_file() or (root / path).stat().st_size == 0:
            state = "is empty (running, or killed before its first step?)" if (root / path).is_file() else "is missing"
            lines.append(f"- {what}: {root / path} {state}; made by {NB.format(nb).format(profile=profile)}")
    for lad in ladders:
        absent = [r for r in lad.rungs if not r.present and r.source is not None]
        if len(absent) == len(SUITES[lad.suite]):
            lines.append(f"- suite {lad.suite}: no rung yet; made by {absent[0].source.makes.format(profile=profile)}")
        else:
            lines += [f"- suite {lad.suite}, {r.rung} ({RUNGS[r.rung]}): {r.why}" for r in absent]
    return "\n".join(lines) + ("\n" if lines else "")
