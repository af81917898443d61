"""thor_core.evaluation.rungs: notebook 04's parameters and profiles, skip notes, tables on hand-made summaries (no model)."""

from __future__ import annotations

import pytest

from thor_core.data.benchmarks import HUB_BENCHMARKS
from thor_core.evaluation import rungs
from thor_core.evaluation.metrics import summarize
from thor_core.params import load_profile
from thor_core.record import ToolCall, Trajectory


def rec(qid, sample, correct, calls=(), bench="heldout", tokens=3):
    return Trajectory(
        question_id=qid, question="q", gold_answer="1", prompt_ids=[0], completion_ids=list(range(tokens)),
        mask=[1] * tokens, tool_calls=[ToolCall("x", ok, "", (0, 0), (0, 0)) for ok in calls],
        final_answer="1" if correct else "2", correct=correct, metadata={"sample": sample, "benchmark": bench},
    )  # fmt: skip


def summary(tag, records, k=4, best_of_n=4, wall=10.0):
    return {"tag": tag, "wall_s": wall, "wall_s_total": wall, **summarize(records, k, best_of_n)}


def test_params_validate_rungs_and_modes():
    p = rungs.RungsParams(rungs={"T1": "embedded:x", "T5": "outputs/cpu/03_rl/final"}, cot_rungs=["T1"], k=4)
    assert p.variants("T1") == [("cot", False), ("tir", False)]
    assert p.variants("T5") == [("tir", False), ("tir", True)]
    assert p.curve_n() == 4  # best_of_n [4, 8]: 8 needs k >= 8
    assert [x.id for x in p.problems()["heldout"]][:2] == ["gen/9001/0", "gen/9001/1"]
    with pytest.raises(ValueError, match="T6 is T5 with self-correction"):
        rungs.RungsParams(rungs={"T6": "x"}, cot_rungs=[], self_correction_rungs=[])
    with pytest.raises(ValueError, match=r"cot_rungs: unknown rungs \['T7'\]"):
        rungs.RungsParams(rungs={"T1": "embedded:x"}, cot_rungs=["T7"])
    assert rungs.RungsParams(rungs={"T1": "embedded:x"}).variants("T1") == [("cot", False), ("tir", False)]


def test_skip_note_names_the_missing_folder_and_its_command(tmp_path):
    assert rungs.skip_note("T1", "embedded:qwen2.5-coder-0.5b-instruct") is None
    assert rungs.skip_note("T1", "Qwen/Qwen2.5-Math-1.5B") is None  # a hub id: left to make_backend
    note = rungs.skip_note("T2", "outputs/cpu/03_rl-cot-nonexistent/final")
    assert (
        "does not exist" in note
        and "03_rl --profile cpu -p mode=cot -p output_dir=outputs/cpu/03_rl-cot-nonexistent" in note
    )
    (tmp_path / "final").mkdir()
    assert "has no config.json" in rungs.skip_note("T3", str(tmp_path / "final"))
    (tmp_path / "final" / "config.json").write_text("{}")
    assert rungs.skip_note("T3", str(tmp_path / "final")) is None


def test_tables_from_summaries():
    tir = [rec(f"q{q}", s, q == 0, calls=(True,) if q == 0 else (False,)) for q in range(3) for s in range(4)]
    sc = [rec(f"q{q}", s, q < 2, calls=(True,), tokens=5) for q in range(3) for s in range(4)]
    sums = {
        "T1": {"tir": summary("tir", tir)},
        "T5": {"tir": summary("tir", tir), "tir-sc": summary("tir-sc", sc, wall=15.0)},
    }
    acc = rungs.accuracy_table(sums)
    # Avg@4 of (1, 0, 0) with its bootstrap interval over the 3 problems: a resample is all-right with p 1/27 > 2.5%
    assert "| T1 (base) | tir | 4 | 33.3 [0.0, 100.0] | **33.3 [0.0, 100.0]** | 3 | 10.0 |" in acc
    assert "| T6 (T5 + self-correction) | tir-sc | 4 | 66.7 [" in acc
    bon = rungs.best_of_n_table(sums, [4, 8])
    assert "33.3 (3 q)" in bon and "needs k >= 8" in bon and "without code calls scores 0 (the kit's default)" in bon
    cost = rungs.correction_cost_table(sums)
    assert "| T5 | 33.3 -> 66.7 | 3 -> 5 (+2, +67%)" in cost and "10.0 -> 15.0 (+5.0, +50%)" in cost
    chi = rungs.tool_chi_square_table(sums)
    # tir: ok & correct 4, failed & wrong 8: chi2 = 12 * (4 * 8)^2 / (4 * 8 * 4 * 8) = 12
    assert "| T1 (base) | tir | 4 | 0 | 0 | 8 | 12 | 12.00 | 0.000532 |" in chi
    assert "undefined" in chi  # tir-sc: no failed call
    assert rungs.correction_cost_table({"T1": sums["T1"]}).startswith("No rung ran both")


def test_several_benchmarks_get_a_column_and_a_row_each_and_their_mean_not_the_pool():
    held = [rec(f"q{q}", s, q == 0) for q in range(3) for s in range(4)]  # Avg@4 1/3
    math = [rec(f"m{q}", s, True, bench="math500") for q in range(2) for s in range(4)]  # Avg@4 1
    sums = {"T1": {"cot": summary("cot", held + math)}}
    acc = rungs.accuracy_table(sums)
    # the mean of the two benchmarks is (1/3 + 1) / 2 = 66.7; pooled over problems it would be 3 / 5 = 60.0
    assert (
        "| heldout | math500 | **mean of 2** |" in acc
        and "| 33.3 [0.0, 100.0] | 100.0 [100.0, 100.0] | **66.7 [" in acc
    )
    table = rungs.metrics_table(sums)
    assert "| heldout | T1 (base) | cot | 3 | 12 | 33.3 [0.0, 100.0] | 33.3 [0.0, 100.0] | 33.3 [0.0, 100.0] |" in table
    assert "| math500 | T1 (base) | cot | 2 | 8 | 100.0 [100.0, 100.0] |" in table
    assert "| **mean of 2** | T1 (base) | cot | | | 66.7 [" in table


def test_a_no_call_score_outside_0_1_is_refused():
    with pytest.raises(ValueError, match=r"no_call_score: .* got 2"):
        rungs.RungsParams(rungs={"T1": "embedded:x"}, no_call_score=2)


def test_a_rung_named_relative_to_the_repo_loads_from_there_whatever_the_working_directory(tmp_path, monkeypatch):
    """Profiles name rungs ``outputs/<profile>/.../final``; notebook 04's kernel runs in notebooks/ (the demo found a
    relative rung path resolved against it)."""
    from thor_core import files

    monkeypatch.setattr(files, "OUTPUTS", tmp_path)
    (tmp_path / "cpu" / "03_rl-cot" / "final").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # anywhere but the repo root
    assert rungs.local_model("outputs/cpu/03_rl-cot/final") == str(tmp_path / "cpu" / "03_rl-cot" / "final")
    assert rungs.local_model("embedded:qwen2.5-coder-0.5b-instruct") == "embedded:qwen2.5-coder-0.5b-instruct"
    assert rungs.local_model("Qwen/Qwen2.5-Math-7B") == "Qwen/Qwen2.5-Math-7B"  # a hub id stays an id


@pytest.mark.parametrize("profile", ["smoke", "cpu", "cpu-full", "gpu-1.5b", "gpu-7b"])
def test_every_04_profile_validates_and_the_gpu_ones_are_the_papers_protocol(profile):
    p = load_profile(rungs.RungsParams, profile, "04_correction_inference")
    if profile != "smoke":  # smoke: N_corr 1, a short test (its header says so)
        assert p.max_corrections == 4 and "T5" in p.self_correction_rungs
    if profile.startswith("gpu"):
        assert p.benchmarks == ["math500", "aime24_hf", "aime25_full", "amc23", "minerva", "olympiadbench"]
        assert all(b in HUB_BENCHMARKS for b in p.benchmarks) and p.limit is None
        assert (p.k, p.temperature, p.top_p, p.max_tool_rounds) == (4, 0.6, 1.0, 10)
        assert (p.correction_suffix_tokens, p.max_corrections, p.no_call_score) == (500, 4, 0.0)
        assert {"T1", "T2"} <= set(p.cot_rungs) and p.curve_n() == 4
