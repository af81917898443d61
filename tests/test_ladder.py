"""thor_core.runs.ladder and notebook 05 on fake run folders laid out as the real ones (outputs/cpu).

Covered: the rung mapping (02_sft's eval-base/eval-sft, 03_rl's eval-rl by its
mode, notebook 04's folder per rung with T6 = T5/records-tir-sc.jsonl),
accuracy with n and the Wilson interval (by hand), McNemar on shared keys only
(by hand), "not run" rungs with the command that makes them, figures as PNG and
PDF, files only read, and the notebook under papermill with and without inputs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import nbformat
import pytest

from thor_core.files import REPO_ROOT
from thor_core.record import Trajectory, write_jsonl
from thor_core.runs import ladder


def _record(
    qid: str, sample: int, correct: bool | None, tokens: int = 10, calls_ok: bool = True, bench: str = "heldout"
) -> Trajectory:
    n = tokens + 4
    call = {"code": "print(1)", "success": calls_ok, "observation": "1", "code_span": [0, 2], "output_span": [2, 4]}
    return Trajectory(
        question_id=qid, question=f"question {qid}", gold_answer="1", prompt_ids=[1, 2], completion_ids=[7] * n,
        mask=[1, 1, 0, 0] + [1] * tokens, tool_calls=[call], final_answer="1" if correct else "2", correct=correct,
        finish_reason="answer", metadata={"sample": sample, "mode": "tir", "benchmark": bench, "source": "generated"},
    )  # fmt: skip


def _eval_dir(folder, tag: str, records: list[Trajectory]) -> None:
    """An evaluation folder as thor_core.evaluation.runner leaves it: records-, summary-, config-<tag> files."""
    write_jsonl(records, folder / f"records-{tag}.jsonl")
    (folder / f"config-{tag}.json").write_text(json.dumps({"mode": tag.split("-")[0], "self_correction": "sc" in tag}))
    (folder / f"summary-{tag}.json").write_text(json.dumps({"tag": tag, "k": 2}))
    (folder / f"summary-{tag}.md").write_text(f"# {tag}\n")


def _pairs(both: int, only_first: int, only_second: int, neither: int) -> tuple[list[bool], list[bool]]:
    first = [True] * both + [True] * only_first + [False] * only_second + [False] * neither
    second = [True] * both + [False] * only_first + [True] * only_second + [False] * neither
    return first, second


@pytest.fixture
def runs(tmp_path):
    """outputs/<profile>-like folders: 01 stats, 02 loss and checks, 03 metrics and check (thor), 04 T1 and T5."""
    root = tmp_path / "runs"
    (root / "01_tirgen").mkdir(parents=True)
    funnel = [{"stage": "questions", "samples": None, "questions": 10}, {"stage": "generated", "samples": 20, "questions": 10},
              {"stage": "correct", "samples": 8, "questions": 6}]  # fmt: skip
    (root / "01_tirgen" / "stats.json").write_text(json.dumps({"funnel": funnel, "calls_histogram": {"1": 5, "2": 3}}))
    (root / "02_sft").mkdir()
    (root / "02_sft" / "loss.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1 / s}) + "\n" for s in (1, 2, 3))
    )
    (root / "02_sft" / "before_after.json").write_text("{}")
    # 20 (question, sample) keys: T1 right on 5, T3 on 9; both 4, only T1 1, only T3 5, neither 10
    keys = [(f"gen/9001/{q}", s) for q in range(10) for s in range(2)]
    t1, t3 = _pairs(4, 1, 5, 10)
    for name, outcomes in (("eval-base", t1), ("eval-sft", t3)):
        (root / "02_sft" / name).mkdir()
        _eval_dir(root / "02_sft" / name, "tir", [_record(q, s, c) for (q, s), c in zip(keys, outcomes)])
    with (root / "02_sft" / "eval-sft" / "records-tir.jsonl").open("a") as f:
        f.write('{"question_id": "torn')  # a killed writer's last line: skipped, and the file left as it is
    rl = root / "03_rl"
    (rl / "eval-rl").mkdir(parents=True)
    (rl / "eval-start").mkdir()
    (rl / "rl_params.json").write_text(json.dumps({"mode": "thor", "model": "outputs/x/02_sft/final"}))
    rows = [{"step": 1, "reward": 0.2, "tool_success": 0.5, "step_pass_rate": float("nan")},
            {"step": 2, "reward": 0.4, "tool_success": 0.7, "step_pass_rate": 0.25}]  # fmt: skip
    (rl / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # NaN written as json does
    # T5: 16 of T3's keys (all right) and 2 keys T3 lacks, and one ungraded record
    t5 = [_record(q, s, True, tokens=30) for q, s in keys[:16]] + [_record("gen/9001/99", s, False) for s in (0, 1)]
    _eval_dir(rl / "eval-rl", "tir", t5 + [_record("gen/9001/98", 0, None)])
    _eval_dir(rl / "eval-start", "tir", [_record(q, s, c) for (q, s), c in zip(keys, t3)])
    nb04 = root / "04_correction_inference"
    for rung, tag, hits in (("T1", "cot", 1), ("T5", "tir-sc", 3)):  # k = 4 samples of 3 questions; T1: no tools
        (nb04 / rung).mkdir(parents=True)
        _eval_dir(
            nb04 / rung, tag, [_record(f"m/{q}", s, s < hits, calls_ok=s != 0) for q in range(3) for s in range(4)]
        )
    return root


def test_heldout_ladder_numbers_by_hand(runs):
    lad = ladder.build_ladder(runs, "heldout", profile="cpu")
    by = {r.rung: r for r in lad.rungs}
    assert [r.rung for r in lad.present] == ["T1", "T3", "T5"]
    assert (by["T1"].n, by["T1"].accuracy, by["T1"].questions) == (20, 0.25, 10)
    # Wilson, 5 of 20: centre (0.25 + 0.096037) / 1.192073, half 1.644168 * sqrt(0.009375 + 0.0024009)
    assert math.isclose(by["T1"].ci[0], 0.111862, abs_tol=1e-5) and math.isclose(by["T1"].ci[1], 0.468702, abs_tol=1e-5)
    assert (by["T3"].n, by["T3"].accuracy) == (20, 0.45)  # the torn last line is skipped
    assert by["T5"].n == 18 and by["T5"].accuracy == 16 / 18 and len(by["T5"].records) == 19  # ungraded left out
    assert by["T5"].tokens == pytest.approx((16 * 32 + 3 * 12) / 19) and "outputs/x/02_sft/final" in by["T5"].why

    first, second = lad.tests
    assert (first["from"], first["to"], first["n"], first["unpaired"]) == ("T1", "T3", 20, 0)
    assert (first["only_first"], first["only_second"]) == (1, 5)
    assert first["p_value"] == pytest.approx(2 * (1 + 6) / 64)  # exact: 2 P(X <= 1), X ~ Bin(6, 1/2)
    # T3 -> T5: only the 16 keys both hold count; 4 of T3's and T5's 2 extra keys are left out
    assert (second["from"], second["to"], second["n"], second["unpaired"]) == ("T3", "T5", 16, 6)
    assert (second["only_first"], second["only_second"]) == (0, 16 - 9)

    for rung, text in (("T2", "ran mode 'thor'"), ("T4", "mode: episode"), ("T6", "no source in this suite")):
        assert not by[rung].present and text in by[rung].why
    assert "`python -m thor_core.runs 03_rl --profile cpu`" in by["T4"].why

    table = ladder.ladder_table(lad)
    assert "| T1 | base | **25.0** [11.2, 46.9] | 20 (10) |" in table
    assert table.count("not run") >= 3 and "paper Qwen2.5-Math-7B (6-benchmark avg)" in table
    assert "| 24.7 | 74.5 | 40.0 | 64.7 |" in table and "| 61.2 | 79.8 | 78.2 | 87.5 |" in table
    tests = ladder.tests_table(lad)
    assert "| T1 -> T3 | 20 | 0 | 1 | 5 | 25.0 -> 45.0 | 0.219 |" in tests and "| T3 -> T5 | 16 | 6 |" in tests


def test_notebook_04_v2_folders_and_t6(runs):
    lad = ladder.build_ladder(runs, "04_correction_inference", profile="smoke")
    by = {r.rung: r for r in lad.rungs}
    assert [r.rung for r in lad.present] == ["T1", "T6"]
    assert by["T6"].why == "04_correction_inference/T5/records-tir-sc.jsonl"  # T6: T5's checkpoint, self-correction
    assert by["T1"].accuracy == 0.25 and by["T6"].accuracy == 0.75
    assert "no " in by["T5"].why and "records-tir.jsonl" in by["T5"].why and "--profile smoke" in by["T5"].why
    assert lad.tests[0]["n"] == 12 and (lad.tests[0]["only_first"], lad.tests[0]["only_second"]) == (0, 6)
    curves = ladder.best_of_n(lad)
    assert set(curves) == {"T1", "T6"} and [row["n"] for row in curves["T6"]] == [1, 2, 3, 4]
    assert curves["T6"][0]["single"] == 0.75


def test_figures_are_written_and_the_inputs_untouched(runs, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("*")}
    raw = (runs / "02_sft" / "eval-sft" / "records-tir.jsonl").read_bytes()
    ladders = ladder.build_ladders(runs)
    figures = ladder.save_figures(runs, ladders, tmp_path / "fig")
    assert set(figures) == {"ladder", "training_curves", "tirgen_funnel", "tokens", "best_of_n"}
    for png in figures.values():
        assert png.stat().st_size > 5000 and png.with_suffix(".pdf").stat().st_size > 5000
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*")} == before
    assert (runs / "02_sft" / "eval-sft" / "records-tir.jsonl").read_bytes() == raw
    assert "suite 04_correction_inference, T2" in ladder.missing(runs, ladders)


def test_nothing_recorded_yet(tmp_path):
    ladders = ladder.build_ladders(tmp_path / "empty", profile="cpu")
    assert not any(lad.present for lad in ladders) and all(not lad.tests for lad in ladders)
    text = ladder.missing(tmp_path / "empty", ladders, profile="cpu")
    for nb in ("01_tirgen", "02_sft", "03_rl", "04_correction_inference"):
        assert f"`python -m thor_core.runs {nb} --profile cpu`" in text
    assert "No rung" in ladder.ladders_markdown(ladders)
    figures = ladder.save_figures(tmp_path / "empty", ladders, tmp_path / "fig")
    assert set(figures) == {"ladder", "training_curves", "tokens"}


def _papermill(tmp_path, root, name):
    out, figs = tmp_path / f"{name}.ipynb", tmp_path / f"{name}-figures"
    cmd = [sys.executable, "-m", "papermill", "notebooks/05_analysis_figures.ipynb", str(out),
           "-p", "runs_root", str(root), "-p", "run_dir", str(figs)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/markdown", "") for o in outputs)
    return text, figs, outputs


@pytest.mark.notebook
def test_notebook_05_on_fake_runs(runs, tmp_path):
    text, figs, outputs = _papermill(tmp_path, runs, "nb05")
    assert "| T1 -> T3 | 20 | 0 | 1 | 5 |" in text and "not run" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 5
    assert (figs / "ladder.png").is_file() and (figs / "ladder.pdf").is_file()


@pytest.mark.notebook
def test_notebook_05_says_what_is_missing(tmp_path):
    text, figs, _ = _papermill(tmp_path, tmp_path / "nothing", "nb05-empty")
    assert "`python -m thor_core.runs 01_tirgen --profile cpu`" in text and "No rung" in text
    assert (figs / "ladder.png").is_file()


def test_per_benchmark_table_beside_the_papers_table_1(tmp_path):
    """Notebook 04's T1 (CoT) and T6 on two of the paper's benchmarks: a column each and their unweighted mean."""
    for rung, tag, hits in (
        ("T1", "cot", {"math500": 1, "aime24_hf": 0}),
        ("T5", "tir-sc", {"math500": 4, "aime24_hf": 2}),
    ):
        folder = tmp_path / "04_correction_inference" / rung
        folder.mkdir(parents=True)
        _eval_dir(folder, tag, [_record(f"{b}/{q}", s, s < hits[b], bench=b) for b in hits for q in range(3) for s in range(4)])  # fmt: skip
    lad = ladder.build_ladder(tmp_path, "04_correction_inference", profile="gpu-7b")
    assert [r.rung for r in lad.present] == ["T1", "T6"]
    table = ladder.benchmark_table(lad)
    assert "| rung | stage | k | math500 (paper: MATH500) | aime24_hf (paper: AIME24) | **mean of 2** |" in table
    # T1: 1 of 4 right on each math500 question (every resample 25%), none on aime24: mean (25 + 0) / 2
    assert "| T1 | base | 4 | 25.0 [25.0, 25.0] | 0.0 [0.0, 0.0] | **12.5 [12.5, 12.5]** | 24.7 |" in table
    assert (
        "| T6 | + self-correction | 4 | 100.0 [100.0, 100.0] | 50.0 [50.0, 50.0] | **75.0 [75.0, 75.0]** | 61.2 |"
        in table
    )
    assert "| T3 | SFT only (TIRGen cold start) | | not run | not run | - | 35.7 |" in table
    assert "| paper Table 1 | THOR-7B | 4 | 87.5 | - | - | - |" in table
    assert "not recorded: AIME24, AIME25, AMC23, Minerva, OlympiadBench" in table
    assert "#### Per benchmark" in ladder.ladders_markdown([lad])


@pytest.mark.parametrize("profile", ["smoke", "cpu", "cpu-full", "gpu-1.5b", "gpu-7b"])
def test_profiles_are_valid(profile):
    import papermill
    import yaml

    from thor_core.params import load_profile, profile_path

    p = load_profile(ladder.AnalysisParams, profile, "05_analysis_figures")
    assert p.profile == profile and p.root().name == profile and p.out_dir().name == "05_analysis_figures"
    declared = set(papermill.inspect_notebook(str(REPO_ROOT / "notebooks" / "05_analysis_figures.ipynb")))
    assert declared == {"profile", "runs_root", "run_dir", "study_root"}
    assert set(yaml.safe_load(profile_path(profile, "05_analysis_figures").read_text())) == {"profile", "runs_root"}
