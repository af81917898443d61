"""The thor vs episode study (``thor_core.runs.study``, ``python -m thor_core.runs study``).

- The plan from params/study/: the pieces, their order and commands; the RL runs differ in mode and seed only, and
  the RL file may not set what the study sets.
- Done / partial / to do from recorded files only (fake folders): a done piece is skipped, a partial one is run
  again through its stage (which resumes), a piece whose inputs are missing says which piece makes them.
- A missing start checkpoint stops before anything is written, naming the commands that make it.
- The analysis on synthetic records whose tests are counted by hand (McNemar, sign test, tokens, T6).
- ``--dry-run``.
- The whole study in miniature on the tiny random model (hf backend), SIGKILLed once and resumed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from thor_core import files
from thor_core.files import REPO_ROOT, write_json_atomic
from thor_core.models import TINY_MODEL
from thor_core.params import ParamsError
from thor_core.record import ToolCall, Trajectory, write_jsonl
from thor_core.rl.run import training_problems
from thor_core.rl.trainer import question_order
from thor_core.runs import study as st

PROFILE = "params/study/study.yaml"
PER_SEED = ["rl-thor-s{0}", "rl-episode-s{0}", "eval-thor-s{0}", "eval-episode-s{0}", "step-thor-s{0}",
            "step-episode-s{0}"]  # fmt: skip


# ------------------------------------------------------------------ the plan from the profile


def test_the_plan_from_the_profile():
    study = st.load_study(PROFILE)
    names = [p.name for p in st.plan(study.s)]
    expected = ["eval-start", "eval-base", *[n.format(0) for n in PER_SEED], *[n.format(1) for n in PER_SEED]]
    assert names == [*expected, "t6-thor", "t6-episode", "analysis"]
    assert study.s.answers() >= 400  # the minimum per model
    pieces = {p.name: p for p in st.plan(study.s)}
    assert pieces["eval-thor-s1"].needs == ("rl-thor-s1",)
    assert pieces["step-episode-s0"].needs == ("rl-episode-s0", "eval-start")
    assert pieces["t6-episode"].needs == ("eval-episode-s0", "eval-episode-s1")
    assert (
        study.command(pieces["rl-thor-s0"])
        == f"python -m thor_core.runs study --params-file {PROFILE} --only rl-thor-s0"
    )
    assert study.stage_command(pieces["rl-episode-s1"]) == (
        "python -m thor_core.rl --config params/study/03_rl.yaml --model outputs/cpu/02_sft/final --mode episode "
        "--seed 1 --output_dir outputs/study/rl-episode-s1"
    )
    assert study.stage_command(pieces["eval-start"]) is None


def test_the_rl_runs_differ_in_mode_and_seed_only():
    study = st.load_study(PROFILE)
    runs = {(m, s): study.rl_params(m, s) for m in ("thor", "episode") for s in (0, 1)}
    thor = runs["thor", 0]
    assert (thor.steps, thor.questions_per_step, thor.group_size, thor.updates_per_batch) == (12, 3, 4, 1)
    assert (thor.learning_rate, thor.method, thor.lora_r, thor.model) == (1e-4, "lora", 16, "outputs/cpu/02_sft/final")
    for (mode, seed), p in runs.items():
        diff = {k for k, v in vars(p).items() if v != getattr(thor, k)}
        assert diff <= {"mode", "seed", "output_dir"} and Path(p.output_dir).name == f"rl-{mode}-s{seed}"
    # which questions: problem_seed, the same for every run; their order: data_seed, the same for every run
    ids = {s: [q.id for q in training_problems(runs["thor", s])] for s in (0, 1)}
    assert ids[0] == ids[1] == [q.id for q in training_problems(runs["episode", 1])]
    orders = {tuple(question_order(len(ids[0]), p, epoch)) for p in runs.values() for epoch in (0,)}
    assert len(orders) == 1
    unfixed = [dataclasses.replace(thor, data_seed=None, seed=s) for s in (0, 1)]  # the seed would set it
    assert question_order(len(ids[0]), unfixed[0], 0) != question_order(len(ids[0]), unfixed[1], 0)


def test_the_rl_file_may_not_set_what_the_study_sets(tmp_path):
    rl = tmp_path / "03_rl.yaml"
    rl.write_text((REPO_ROOT / "params/study/03_rl.yaml").read_text() + "mode: thor\nseed: 3\n")
    study = _study(tmp_path, rl_params=str(rl))
    with pytest.raises(ParamsError, match="mode: set by the study") as err:
        study.rl_params("thor", 0)
    assert "seed: set by the study" in str(err.value)


def test_bad_study_settings_are_named(tmp_path):
    (tmp_path / "s.yaml").write_text("modes: [thor, cot]\nseeds: []\nmath500_n: 400\n")
    with pytest.raises(ParamsError, match="modes: got"):
        st.load_study(str(tmp_path / "s.yaml"))
    (tmp_path / "s.yaml").write_text("seeds: []\nmath500_n: 400\n")
    with pytest.raises(ValueError, match="seeds must be a non-empty list") as err:
        st.load_study(str(tmp_path / "s.yaml"))
    assert "math500_n must be <= 311" in str(err.value)


# ------------------------------------------------------------------ state from recorded files


def _study(tmp_path, **values) -> st.Study:
    """A study file in ``tmp_path`` (the profile's RL file, the tiny model as start unless given)."""
    settings = {"start": TINY_MODEL, "out_dir": str(tmp_path / "study"), "heldout_exclude": [], **values}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(settings))
    return st.load_study(str(tmp_path / "study.yaml"))


def _manifest(folder: Path, status: str = "ok", **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "manifest.json", {"status": status, **extra})


def _finished_rl(folder: Path, steps: int) -> None:
    _manifest(folder)
    (folder / "final").mkdir()
    (folder / "final" / "config.json").write_text("{}")
    write_json_atomic(folder / "rl_summary.json", {"steps": steps})


def _record(q: str, sample: int, correct: bool, boxed: bool = True, benchmark: str = "heldout", calls=()) -> Trajectory:
    text = f"so \\boxed{{{int(correct)}}}" if boxed else "ran out"
    return Trajectory(question_id=q, question="?", gold_answer="1", prompt_ids=[1], completion_ids=[5, 6], mask=[1, 1],
                      completion_text=text, correct=correct, tool_calls=list(calls),
                      metadata={"sample": sample, "benchmark": benchmark})  # fmt: skip


def test_done_partial_and_to_do_from_recorded_files(tmp_path):
    study = _study(tmp_path)
    root, pieces = study.root, {p.name: p for p in st.plan(study.s)}
    answers = study.s.answers()
    _manifest(root / "eval-start")
    write_json_atomic(root / "eval-start" / "summary-tir.json", {"overall": {"samples": answers}})
    _finished_rl(root / "rl-episode-s0", 12)
    _finished_rl(root / "rl-thor-s1", 8)  # finished with fewer steps than asked: `steps` raised, it trains on
    _manifest(root / "rl-thor-s0", status="running")  # killed in step 4, after step 3's checkpoint
    (root / "rl-thor-s0" / "metrics.jsonl").write_text("".join(json.dumps({"step": i}) + "\n" for i in (1, 2, 3)))
    (root / "rl-thor-s0" / "checkpoints" / "step-3").mkdir(parents=True)
    (root / "rl-thor-s0" / "checkpoints" / "step-3" / "trainer_state.json").write_text("{}")
    write_jsonl([_record(f"q{i}", 0, True) for i in range(5)], root / "eval-thor-s0" / "records-tir.jsonl")
    _manifest(root / "step-thor-s0")
    write_json_atomic(root / "step-thor-s0" / "step_check.json", {})
    _manifest(root / "step-episode-s0", result=st.NO_PREFIX)
    _manifest(root / "step-thor-s1", status="failed", error="boom")
    _manifest(root / "rl-episode-s1", status="running")  # killed in its first step: nothing to resume from
    state = {name: st.piece_state(study, p) for name, p in pieces.items()}
    assert state["eval-start"] == ("done", f"{answers} answers")
    assert state["rl-episode-s0"] == ("done", "12 steps")
    assert state["rl-thor-s1"][0] == "partial" and "0 of 12 steps logged" in state["rl-thor-s1"][1]
    assert state["rl-thor-s0"] == ("partial", "3 of 12 steps logged, checkpoint step 3: resumes from its checkpoint")
    assert state["rl-episode-s1"] == ("partial", "0 of 12 steps logged, no checkpoint yet: starts again from step 1")
    assert state["eval-thor-s0"] == ("partial", f"5 of {answers} answers recorded: the evaluation resumes its records")
    assert state["step-thor-s0"][0] == state["step-episode-s0"][0] == "done"
    assert state["step-thor-s1"][0] == "partial" and "failed last time (boom)" in state["step-thor-s1"][1]
    assert state["eval-episode-s0"] == state["t6-thor"] == ("to do", "")


def test_a_done_piece_is_skipped_and_a_partial_one_runs_its_stage_again(tmp_path, monkeypatch):
    study = _study(tmp_path)
    _finished_rl(study.root / "rl-episode-s0", 12)
    _manifest(study.root / "rl-thor-s0", status="running")  # killed
    (study.root / "rl-thor-s0" / "metrics.jsonl").write_text('{"step": 1}\n')
    trained = []

    def fake_train(p):  # the stage: resumes from its checkpoint, finishes
        trained.append(p)
        _finished_rl(Path(p.output_dir), p.steps)
        return {"steps": p.steps, "wall_s": 1.0, "final": str(Path(p.output_dir) / "final")}

    monkeypatch.setattr(st, "train", fake_train)
    out = _Lines()
    assert st.run_study(study, ["rl-*-s0"], out) == 0
    assert [(p.mode, p.seed, Path(p.output_dir)) for p in trained] == [("thor", 0, study.root / "rl-thor-s0")]
    assert trained[0].model == TINY_MODEL and trained[0].learning_rate == 1e-4
    assert "[1/2] rl-thor-s0: RL, thor mode, seed 0, from the start" in out.text and "(partial: 1 of 12" in out.text
    assert "[2/2] rl-episode-s0: done before (12 steps); skipped" in out.text
    assert st.piece_state(study, st.select(st.plan(study.s), ["rl-thor-s0"])[0])[0] == "done"
    record = json.loads((study.root / "study.json").read_text())
    assert record["params"]["start"] == TINY_MODEL and record["pieces"]["rl-thor-s0"]["runs"][0]["status"] == "ok"
    assert record["pieces"]["rl-thor-s0"]["rollout_tokens"] == {"episode": 0, "step_level": 0, "all": 0}
    assert "rl-episode-s0" not in record["pieces"]  # skipped: nothing ran
    # a second run finds both done: nothing runs
    assert st.run_study(study, ["rl-*-s0"], _Lines()) == 0 and len(trained) == 1


def test_a_piece_whose_input_is_missing_names_the_piece_that_makes_it(tmp_path):
    study = _study(tmp_path)
    with pytest.raises(st.StudyError, match="eval-thor-s0 needs rl-thor-s0, which is to do: run it first") as err:
        st.run_study(study, ["eval-thor-s0"], _Lines())
    assert f"--params-file {tmp_path / 'study.yaml'} --only rl-thor-s0" in str(err.value)
    with pytest.raises(st.StudyError, match="--only rl-nope: no such piece"):
        st.run_study(study, ["rl-nope"], _Lines())


def test_a_missing_start_checkpoint_stops_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(files, "OUTPUTS", tmp_path / "outputs")  # no cpu chain here
    study = _study(tmp_path, start="outputs/cpu/02_sft/final")
    with pytest.raises(st.StudyError) as err:
        st.run_study(study)
    message = str(err.value)
    assert "the start checkpoint outputs/cpu/02_sft/final is missing" in message
    assert (
        "python -m thor_core.runs 01_tirgen --profile cpu && python -m thor_core.runs 02_sft --profile cpu" in message
    )
    assert not study.root.exists()  # nothing written
    assert st.main(["--params-file", str(tmp_path / "study.yaml")]) == 2
    assert "error: the start checkpoint" in capsys.readouterr().err
    assert "start: outputs/cpu/02_sft/final (MISSING: the start checkpoint" in st.dry_run(study)


def test_dry_run(tmp_path, capsys):
    study = _study(tmp_path)
    _finished_rl(study.root / "rl-thor-s0", 12)
    assert st.main(["--params-file", str(tmp_path / "study.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"start: {TINY_MODEL} (found)" in out
    assert " 1. eval-start         to do    the start" in out
    assert " 2. eval-base          to do    the base model (embedded:qwen2.5-coder-0.5b-instruct), T1" in out
    assert " 3. rl-thor-s0         done     RL, thor mode, seed 0, from the start [12 steps]" in out
    assert f"    $ python -m thor_core.runs study --params-file {tmp_path / 'study.yaml'} --only rl-episode-s0" in out
    assert "(runs the stage: python -m thor_core.rl --config params/study/03_rl.yaml --model" in out
    assert "17. analysis           to do    tables and figures" in out
    assert not (study.root / "study.json").exists()  # a dry run writes nothing
    assert st.main(["--params-file", str(tmp_path / "study.yaml"), "--dry-run", "--only", "t6-*"]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines() if line[:3].strip().endswith(".")] == [
        "t6-thor", "t6-episode"]  # fmt: skip


class _Lines:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass


# ------------------------------------------------------------------ the analysis on synthetic records

# 4 held-out problems x k = 2. Seed 0: thor right on all 8 answers; episode right on q0's two, no boxed answer on
# q1 and q2, boxed but wrong on q3. Seed 1: thor right on q0/0 only; episode right on q0/0 and q1/0.
RIGHT = {
    "thor-s0": {(q, s) for q in range(4) for s in range(2)},
    "episode-s0": {(0, 0), (0, 1)},
    "thor-s1": {(0, 0)},
    "episode-s1": {(0, 0), (1, 0)},
    "start": {(0, 0)},
    "base": {(0, 0), (0, 1)},
}


def _answers(run: str) -> list[Trajectory]:
    unboxed = {(q, s) for q in (1, 2) for s in range(2)} if run == "episode-s0" else set()
    ok = ToolCall("print(1)", True, "1", (0, 1), (1, 2))
    return [_record(f"q{q}", s, (q, s) in RIGHT[run], (q, s) not in unboxed, calls=[ok]) for q in range(4) for s in range(2)]  # fmt: skip


def _step_record(prefix: int, sample: int, passed: bool) -> Trajectory:
    call = ToolCall("print(1)", passed, "1" if passed else "Error", (0, 1), (1, 2))
    return Trajectory(question_id=f"q{prefix}", question="?", gold_answer="1", prompt_ids=[1], completion_ids=[5, 6],
                      mask=[1, 1], tool_calls=[call],
                      finish_reason="code_executed", metadata={"group": f"s/{prefix}", "sample": sample, "prefix_calls": 0})  # fmt: skip


def _synthetic_study(tmp_path) -> Path:
    root = tmp_path / "study"
    s = st.StudyParams(start=TINY_MODEL, out_dir=str(root), heldout_n=4, math500_n=0, eval_k=2, heldout_exclude=[])
    root.mkdir()
    write_json_atomic(root / "study.json", {"params": vars(s), "pieces": {"rl-thor-s0": {"wall_s": 300.0}}})
    for run in RIGHT:
        _manifest(root / f"eval-{run}")
        write_jsonl(_answers(run), root / f"eval-{run}" / "records-tir.jsonl")
    # T6 on thor-s0 (its seed's held-out accuracy is the higher): one answer lost
    _manifest(root / "t6-thor", result={"best": "thor-s0"})
    t6 = [_record(f"q{q}", s, (q, s) != (3, 0)) for q in range(4) for s in range(2)]
    write_jsonl(t6, root / "t6-thor" / "records-tir-sc.jsonl")
    # RL metrics: thor samples 12/s x 150 s = 1,800 tokens (12 x 100 episode + 600 step level), episode 10/s x 120 s
    for run, step_s, step_rollout_s, per_s in (("thor-s0", 200.0, 30.0, 12.0), ("episode-s0", 150.0, 0.0, 10.0)):
        row = {"step": 1, "reward": 0.25, "step_pass_rate": 0.5, "response_tokens": 100.0, "episode_rollouts": 12,
               "step_rollouts": 8 if step_rollout_s else 0, "tokens_per_s": per_s, "time/rollout_s": 120.0,
               "time/step_rollout_s": step_rollout_s, "time/update_s": 40.0, "time/step_s": step_s}  # fmt: skip
        (root / f"rl-{run}").mkdir()
        (root / f"rl-{run}" / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    # step checks on the same 3 prefixes x 2: the start passes 1 of 6; thor 5, episode 2
    from thor_core.rl import step_check as sc

    settings = {"prefixes": ["a", "b", "c"]}
    start = [_step_record(p, k, (p, k) == (0, 0)) for p in range(3) for k in range(2)]
    passes = {"thor-s0": {(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)}, "episode-s0": {(0, 0), (1, 0)}}
    for run, passed in passes.items():
        rl = [_step_record(p, k, (p, k) in passed) for p in range(3) for k in range(2)]
        folder = root / f"step-{run}"
        write_jsonl(rl, folder / "step-check-rl.jsonl")
        write_json_atomic(folder / "step_check.json", sc.summarize({"start": start, "rl": rl}, settings))
    return root


def test_the_analysis_on_synthetic_records(tmp_path):
    root = _synthetic_study(tmp_path)
    c = st.collect(root)
    tests = dict(st.comparisons(c))
    seed0 = tests["seed 0: episode -> thor"]
    # 6 answers only thor got, none only episode: p = 2 / 2^6; per problem q1-q3 better, q0 tied: p = 2 / 2^3
    assert (seed0["correct"]["only_first"], seed0["correct"]["only_second"]) == (0, 6)
    assert seed0["correct"]["p_value"] == pytest.approx(2 / 64)
    assert (seed0["problems"]["better"], seed0["problems"]["worse"], seed0["problems"]["tied"]) == (3, 0, 1)
    assert seed0["problems"]["p_value"] == pytest.approx(0.25)
    # where from: 4 of thor's 6 gains are answers episode left without a boxed answer; among both-boxed pairs, 2 vs 0
    assert (seed0["boxed"]["only_first"], seed0["boxed"]["only_second"]) == (0, 4)
    assert seed0["gains_second_other_unanswered"] == 4
    assert (seed0["both_answered"]["n"], seed0["both_answered"]["only_second"]) == (4, 2)
    seed1 = tests["seed 1: episode -> thor"]
    assert (seed1["correct"]["only_first"], seed1["correct"]["only_second"], seed1["correct"]["p_value"]) == (1, 0, 1.0)
    both = tests["pooled over seeds 0, 1: episode -> thor"]
    # pooled pairs: 1 vs 6 discordant, p = 2 (1 + 7) / 2^7; per problem over both seeds: q1 +2 -1, q2 +2, q3 +2: 3-0-1
    assert (both["correct"]["n"], both["correct"]["only_first"], both["correct"]["only_second"]) == (16, 1, 6)
    assert both["correct"]["p_value"] == pytest.approx(16 / 128)
    assert (both["problems"]["better"], both["problems"]["worse"], both["problems"]["tied"]) == (3, 0, 1)
    rows = st.compute_rows(c)
    assert rows["thor-s0"]["tokens"] == {"episode": 1200, "step_level": 600, "all": 1800}
    assert rows["episode-s0"]["tokens"] == {"episode": 1200, "step_level": 0, "all": 1200}
    report = st.write_analysis(root).read_text()
    assert "| seed 0: episode -> thor | 8 | 0 | 6 | 25.0 -> 100.0 | 0.0312 | 3 / 0 / 1 | 0.25 |" in report
    assert (
        "| pooled over seeds 0, 1: episode -> thor | 16 | 1 | 6 | 25.0 -> 56.2 | 0.125 | 3 / 0 / 1 | 0.25 |" in report
    )
    assert "| seed 0: episode -> thor | 0 / 4 (0.125) | 4: 0 / 2 (0.5) | 0 | 4 |" in report
    assert "| thor-s0 | 8 (4) | **100.0** [67.6, 100.0] | 100.0 (8) | 100.0 | 100.0 | 1.00 | 100.0 | 2 |" in report
    assert "| thor-s0 | 1 | 12 | 8 | 1,200 / 600 / 1,800 | 200 (120 / 30 / 40) | 300 |" in report
    assert "| thor / episode, seed 0 | | | | 1.50x | 1.33x | |" in report
    # step check: start 1/6 -> thor 5/6 (0 vs 4 pairs, p = 2 / 2^4; 3 prefixes better, p = 2 / 2^3); episode 2/6 ->
    # thor 5/6 on the same prefixes (0 vs 3, p = 2 / 2^3; each prefix better)
    assert "| start -> thor-s0 | 3 | 16.7 (1/6) [3.0, 56.4] | 83.3 (5/6) [43.6, 97.0] | 0 vs 4 (0.125) | 3 / 0 / 0 | 0.25 |" in report  # fmt: skip
    assert "| episode-s0 -> thor-s0 (same prefixes) | 3 | 33.3 (2/6)" in report and "| 0 vs 3 (0.25) | 3 / 0 / 0 | 0.25 |" in report  # fmt: skip
    # T6 on thor-s0: q3/0 lost (1 vs 0, p = 1); the problem q3 worse
    assert "| thor: thor-s0 | 8 | 100.0 -> 87.5 | 1 vs 0 (1) | 0 / 1 / 3 (1) | 0.00 |" in report
    assert "| base -> start | 8 | 1 | 0 | 25.0 -> 12.5 | 1 | 0 / 1 / 3 | 1 |" in report  # T1 -> T3, paired
    assert "| base -> start: heldout | 8 | 1 | 0 | 25.0 -> 12.5 | 1 | 0 / 1 / 3 | 1 |" in report  # one benchmark here
    assert "- `rl-thor-s0`: not started" in report and "- `eval-start`: finished" in report
    for name in ("rewards", "accuracy", "step_check"):
        assert (root / "analysis" / f"{name}.png").stat().st_size > 1000 and (
            root / "analysis" / f"{name}.pdf"
        ).is_file()
    assert st.best_run(root, "thor", [0, 1]) == ("thor-s0", {"thor-s0": 1.0, "thor-s1": 0.125})
    assert st.best_run(root, "episode", [0, 1])[0] == "episode-s0"  # a tie (0.25 each): the lower seed


@pytest.mark.notebook
def test_notebook_05_draws_the_study_from_its_recorded_files(tmp_path):
    """study_root set: the report and the figures in notebook 05's own run folder, the study folder untouched."""
    import nbformat

    root, out, figs = _synthetic_study(tmp_path), tmp_path / "nb05.ipynb", tmp_path / "figures"
    cmd = [sys.executable, "-m", "papermill", "notebooks/05_analysis_figures.ipynb", str(out), "-p", "runs_root",
           str(tmp_path / "no-ladder"), "-p", "run_dir", str(figs), "-p", "study_root", str(root)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    cell = next(c for c in nbformat.read(out, as_version=4).cells if c.get("id") == "study")
    text = "".join(o.get("data", {}).get("text/markdown", "") for o in cell.outputs)
    assert "| seed 0: episode -> thor | 8 | 0 | 6 | 25.0 -> 100.0 | 0.0312 | 3 / 0 / 1 | 0.25 |" in text
    assert sum("image/png" in o.get("data", {}) for o in cell.outputs) == 3
    assert {p.name for p in (figs / "study").glob("*.png")} == {"rewards.png", "accuracy.png", "step_check.png"}
    assert not (root / "analysis").exists()


def test_the_analysis_says_what_is_not_recorded_yet(tmp_path):
    root = tmp_path / "empty"
    with pytest.raises(st.StudyError, match="no study.json"):
        st.collect(root)
    root.mkdir()
    write_json_atomic(root / "study.json", {"params": vars(st.StudyParams(heldout_exclude=[]))})
    report = st.write_analysis(root, tmp_path / "elsewhere").read_text()  # notebook 05 would give its run folder
    assert (tmp_path / "elsewhere" / "rewards.png").is_file() and not (root / "analysis").exists()
    for text in ("no evaluation recorded yet", "no RL run has logged a step yet", "no step check recorded yet",
                 "no T6 run recorded yet", "- `eval-start`: not started"):  # fmt: skip
        assert text in report


# ------------------------------------------------------------------ the whole study in miniature


TINY_RL = {
    "problems": "generated", "n_problems": 8, "problem_seed": 2027, "levels": [1], "steps": 1,
    "questions_per_step": 1, "group_size": 2, "max_refill_rounds": 0, "backend": "hf", "max_new_tokens": 48,
    "max_tool_rounds": 1, "step_max_new_tokens": 24, "suffix_tokens": 8, "learning_rate": 1.0e-4, "method": "lora",
    "micro_batch_rows": 4, "save_steps": 1, "report_to": "none", "progress": "lines",
}  # fmt: skip


@pytest.fixture
def scratch(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path / "study", ignore_errors=True)  # the tiny model's checkpoints and final/s: ~600 MB


@pytest.mark.model
def test_the_study_in_miniature_killed_and_resumed(scratch):
    """The tiny random model, hf backend: every piece for real (2 RL runs of one step, 4 evaluations of 3 answers, the
    base's among them, 2 step checks, which find no failed call in the tiny model's answers, 2 T6 runs, the analysis);
    SIGKILLed (with its children) once the first RL run has started, then the same command finishes without redoing the evaluation."""
    tmp_path = scratch
    (tmp_path / "03_rl.yaml").write_text(yaml.safe_dump(TINY_RL))
    settings = {"rl_params": str(tmp_path / "03_rl.yaml"), "start": TINY_MODEL, "base": TINY_MODEL, "out_dir": str(tmp_path / "study"),
                "seeds": [0], "backend": "hf", "heldout_n": 2, "math500_n": 1, "eval_k": 1, "heldout_exclude": [],
                "eval_max_new_tokens": 48, "eval_max_tool_rounds": 2, "step_check_n": 2, "step_check_k": 2}  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(settings))
    cmd = [sys.executable, "-m", "thor_core.runs", "study", "--params-file", str(tmp_path / "study.yaml")]
    env = {**os.environ, "THOR_PROGRESS": "lines"}
    root = tmp_path / "study"
    first = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (root / "rl-thor-s0" / "manifest.json").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the study and its children, in the middle of the first RL run
    first.wait()
    assert json.loads((root / "eval-start" / "manifest.json").read_text())["status"] == "ok"
    start_records = (root / "eval-start" / "records-tir.jsonl").read_text()

    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[1/11] eval-start: done before (3 answers); skipped" in done.stdout
    assert (root / "eval-start" / "records-tir.jsonl").read_text() == start_records  # not redone
    for name in ("eval-base", "rl-thor-s0", "rl-episode-s0", "eval-thor-s0", "eval-episode-s0", "step-thor-s0", "step-episode-s0",
                 "t6-thor", "t6-episode"):  # fmt: skip
        assert json.loads((root / name / "manifest.json").read_text())["status"] == "ok", name
    record = json.loads((root / "study.json").read_text())
    assert record["pieces"]["rl-thor-s0"]["rollout_tokens"]["all"] > 0
    assert record["pieces"]["eval-start"]["runs"][0]["cpus"] == os.cpu_count()
    pinned = json.loads((root / "heldout.json").read_text())["problems"]
    assert [len(pinned["heldout"]), len(pinned["math500_mmath"])] == [2, 1]
    report = (root / "analysis" / "study.md").read_text()
    assert "| seed 0: episode -> thor | 3 |" in report and "| thor-s0 | 1 |" in report
    assert st.dry_run(st.load_study(str(tmp_path / "study.yaml"))).count(" done ") == 10  # all but the analysis
