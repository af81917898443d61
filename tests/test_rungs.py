"""thor_core.evaluation.rungs: notebook 04's parameters, skip notes and tables on hand-made summaries (no model)."""

from __future__ import annotations

import pytest

from thor_core.evaluation import rungs
from thor_core.evaluation.metrics import summarize
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
    assert "| T1 (base) | tir | 33.3 [" in acc and "(n=12)" in acc and "| T6 (T5 + self-correction) | tir-sc |" in acc
    bon = rungs.best_of_n_table(sums, [4, 8])
    assert "33.3 (3 q)" in bon and "needs k >= 8" in bon
    cost = rungs.correction_cost_table(sums)
    assert "| T5 | 33.3 -> 66.7 | 3 -> 5 (+2, +67%)" in cost and "10.0 -> 15.0 (+5.0, +50%)" in cost
    chi = rungs.tool_chi_square_table(sums)
    # tir: ok & correct 4, failed & wrong 8: chi2 = 12 * (4 * 8)^2 / (4 * 8 * 4 * 8) = 12
    assert "| T1 (base) | tir | 4 | 0 | 0 | 8 | 12 | 12.00 | 0.000532 |" in chi
    assert "undefined" in chi  # tir-sc: no failed call
    assert rungs.correction_cost_table({"T1": sums["T1"]}).startswith("No rung ran both")


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
