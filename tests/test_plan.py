"""thor_core.runs.plan: the compute plan of a profile, checked by hand on a small profile; the gpu profiles plan.

Covered: each stage's rollouts, completion-token bounds and optimizer steps on a hand-sized profile (01 with the CoT
pre-filter and a critic retry, 02 bounded by 01's questions, 03 in thor mode with refill rounds and 4 updates per
round, 04 with a capped and an uncapped benchmark); the GPU count read from a header; the CLI on the gpu profiles and
its error for a missing one.
"""

from __future__ import annotations

import pytest

from thor_core.params import read_yaml_mapping
from thor_core.runs import plan

PROFILE = {
    "01_tirgen": "# built for one 80 GB GPU\nn_problems: 10\nk: 3\ncot_filter_k: 2\ncot_max_new_tokens: 100\n"
    "max_new_tokens: 400\nmax_steps: 5\ncritic_retries: 1\ncritic_max_new_tokens: 50\n",
    "02_sft": "# one node of 8 GPUs\nglobal_batch_size: 4\nnum_train_epochs: 2\nmax_length: 512\n"
    "heldout_n: 3\neval_k: 2\neval_max_new_tokens: 100\n",
    "03_rl": "mode: thor\nsteps: 2\nquestions_per_step: 3\ngroup_size: 4\nmax_refill_rounds: 1\nmax_new_tokens: 200\n"
    "step_max_new_tokens: 50\nupdates_per_batch: 4\nheldout_n: 5\neval_k: 2\neval_max_new_tokens: 300\n"
    "step_check_n: 2\nstep_check_k: 3\n",
    "03_rl-cot": "mode: cot\nsteps: 1\nquestions_per_step: 2\ngroup_size: 4\nmax_refill_rounds: 0\n"
    "max_new_tokens: 100\nheldout_n: 0\nstep_check_n: 0\n",
    "04_correction_inference": "rungs: {T1: a, T5: b}\ncot_rungs: [T1]\nself_correction_rungs: [T5]\n"
    "benchmarks: [heldout, aime25]\nheldout_n: 7\nlimit: null\nk: 2\nmax_new_tokens: 100\n",
}


@pytest.fixture
def params_root(tmp_path):
    (tmp_path / "tiny").mkdir()
    for stage, text in PROFILE.items():
        (tmp_path / "tiny" / f"{stage}.yaml").write_text(text)
    return tmp_path


def test_the_plan_of_a_hand_sized_profile(params_root):
    stages = plan.profile_plan("tiny", params_root)
    assert [s for s, _, _ in stages] == list(PROFILE)
    by = {(stem, line.what): line for stem, lines, _ in stages for line in lines}
    rows = {k: (v.rollouts, v.tokens_max, v.optimizer_steps) for k, v in by.items()}
    # 01: 10 questions x 2 CoT samples x 100; 10 x 3 attempts x 400; 30 attempts x 5 steps x 2 tries x 50
    assert rows["01_tirgen", "CoT pre-filter (actor)"] == (20, 2_000, None)
    assert rows["01_tirgen", "attempts (actor)"] == (30, 12_000, None)
    assert rows["01_tirgen", "critic rewrites (the actor)"] == (300, 15_000, None)
    # 02: at most 10 examples (one per 01 question) x 2 epochs / batch 4 = 5 steps; the paper's 29,217 x 2 / 4
    assert rows["02_sft", "fine-tune"] == (0, 0, 5)
    assert by["02_sft", "fine-tune"].expected == "14,609 on the paper's 29,217 samples"
    assert rows["02_sft", "before/after check"] == (2 * 3 * 2, 12 * 100, None)
    # 03: 2 steps x 3 questions x G 4 = 24 rollouts, x 2 sampling rounds at most; 2 x 4 = 8 optimizer steps
    assert rows["03_rl", "episode rollouts"] == (48, 48 * 200, 8)
    assert by["03_rl", "episode rollouts"].expected == "24 rollouts without refill rounds"
    # step level: 2 steps x 2 rounds x 3 prefixes (one per question) x G 4, each within 200 + 50 tokens
    assert rows["03_rl", "step-level continuations"] == (48, 48 * 250, None)
    assert rows["03_rl", "before/after check"] == (20, 6_000, None)
    assert rows["03_rl", "step-level check"] == (12, 12 * 250, None)
    # 04: (7 held-out + 15 offline AIME 2025) x k 2 = 44 answers per run: T1 cot, T1 tir, T5 tir, T5 tir-sc
    assert rows["04_correction_inference", "4 runs: T1 cot, T1 tir, T5 tir, T5 tir-sc"] == (4 * 44, 4 * 4_400, None)
    # a variant of 03 (RL without tools): its own rollouts, no step level, no checks
    assert [k for k in rows if k[0] == "03_rl-cot"] == [("03_rl-cot", "episode rollouts")]
    assert rows["03_rl-cot", "episode rollouts"] == (8, 800, 1)
    assert [g for _, _, g in stages] == [1, 8, None, None, None]
    table = plan.plan_table(stages)
    total = sum(v[0] for v in rows.values())
    assert f"| total | | {total:,} |" in table and "| 8 / unknown |" in table


def test_an_unknown_benchmark_size_needs_a_limit(params_root):
    path = params_root / "tiny" / "04_correction_inference.yaml"
    path.write_text(PROFILE["04_correction_inference"].replace("aime25", "my_set"))
    with pytest.raises(ValueError, match="no known size for benchmark 'my_set': set limit"):
        plan.profile_plan("tiny", params_root)
    path.write_text(path.read_text().replace("limit: null", "limit: 4"))
    assert [line.rollouts for line in plan.stage_plan("04_correction_inference", path)] == [4 * (4 + 4) * 2]


@pytest.mark.parametrize(
    "header, gpus",
    [("scaled to one node of 8 GPUs (params/accelerate)", 8), ("One 80 GB GPU holds it", 1),
     ("needs GPUs and hub access", None), ("", None)],
)  # fmt: skip
def test_the_gpu_count_a_header_states(header, gpus):
    assert plan.stated_gpus(header) == gpus


@pytest.mark.parametrize("profile", ["gpu-1.5b", "gpu-7b"])
def test_the_cli_plans_the_gpu_profiles(profile, capsys):
    assert plan.main(["--profile", profile]) == 0
    out = capsys.readouterr().out
    rl = read_yaml_mapping(plan.PARAMS / profile / "03_rl.yaml")
    steps = rl["steps"] * rl.get("updates_per_batch", 1)
    assert "| 03_rl | episode rollouts |" in out and f"| {steps:,} |" in out


def test_the_cli_names_a_missing_profile(capsys):
    assert plan.main(["--profile", "no-such-profile"]) == 2
    assert "no profile 'no-such-profile'" in capsys.readouterr().err
