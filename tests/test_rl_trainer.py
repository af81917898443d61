"""The RL trainer with real updates of the tiny random Qwen; rollouts scripted for determinism (tests/rl_scripted.py).

The real engine path (vLLM / hf backends on the embedded model) runs end to end
in tests/test_notebook_03.py. Here: every trainable parameter changes, the
metrics and samples are written, a run killed mid-way (SIGKILL) resumes as if
never stopped, two processes under ``accelerate launch`` match one process,
LoRA weights are merged for the engine, one update per rollout batch keeps the
importance ratio at 1 while two let it move and the clips act, and bad settings are refused.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import rl_scripted  # noqa: E402

from thor_core.files import REPO_ROOT  # noqa: E402

pytestmark = pytest.mark.model
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _scripted_run(out: Path, problems: Path) -> list[str]:
    """The command of one single-process run of ``rl_scripted`` (run under ``ENV``)."""
    return [sys.executable, str(Path(__file__).parent / "rl_scripted.py"), str(out), str(problems), "{}"]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "final" / "model.safetensors"))


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single-process run of two steps, started as the killed run is (a subprocess under ENV):
    a run on another number of threads sums in another order, and its weights differ by ~4e-6 after two steps."""
    root = tmp_path_factory.mktemp("rl")
    problems = rl_scripted.write_problems(root / "problems.jsonl")
    cmd = _scripted_run(root / "ref", problems)
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((root / "ref" / "rl_summary.json").read_text())
    yield root, problems, summary
    shutil.rmtree(root, ignore_errors=True)  # each run's checkpoints hold model + AdamW state: ~1.6 GB


def test_every_trainable_parameter_changes_and_metrics_are_logged(reference):
    from thor_core.models import load_model_and_tokenizer

    root, _, summary = reference
    start = dict(load_model_and_tokenizer(rl_scripted.MODEL)[0].named_parameters())
    after = _weights(root / "ref")
    unchanged = [n for n, p in start.items() if n in after and torch.equal(p.detach(), after[n])]
    assert not unchanged, unchanged
    rows = _metrics(root / "ref")
    assert [r["step"] for r in rows] == [1, 2] and summary["steps"] == 2
    for r in rows:  # the scripted policy: half right, one failing call per group, alternating step-level code
        assert r["reward"] == 0.5 and r["step_pass_rate"] == 0.5 and r["tool_success"] == 0.75
        assert r["count/episode_groups_kept"] == 2 and r["count/step_groups_kept"] == 2
        assert r["rows"] == 14 and r["rows_step"] == 8 and r["count/rollouts_dropped/failed_code"] == 2
        assert r["grad_norm"] > 0 and r["trained_tokens"] > 0 and r["loss"] == r["loss"]
        for key in ("entropy", "clip_frac", "logprob_diff_abs", "time/rollout_s", "time/update_s", "tokens_per_s"):
            assert key in r
    samples = (root / "ref" / "samples" / "step-2.jsonl").read_text().splitlines()
    assert len(samples) == 8 + 8  # 2 questions x G=4 episode rollouts, 2 prefixes x G=4 continuations


def test_a_run_killed_mid_way_resumes_as_if_never_stopped(reference):
    root, problems, _ = reference
    out = root / "killed"
    cmd = _scripted_run(out, problems)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not (out / "checkpoints" / "step-1" / "trainer_state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "final").exists()
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming from" in done.stdout
    ref, resumed = _metrics(root / "ref"), _metrics(out)
    assert [r["step"] for r in resumed] == [1, 2]
    for a, b in zip(ref, resumed):
        for key in ("reward", "loss", "grad_norm", "rows", "step_pass_rate"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    ref_w, res_w = _weights(root / "ref"), _weights(out)
    assert all(torch.allclose(ref_w[n], res_w[n], atol=1e-6) for n in ref_w)


def test_a_lora_run_checkpoints_its_adapter_alone_and_resumes_from_it(reference, tmp_path):
    """A LoRA checkpoint holds the trainable tensors only (the frozen base is the start model's: 2.4 GB of each
    checkpoint of the 0.5B before); a run stopped after step 1 and continued to step 2 from that checkpoint ends
    with the uninterrupted run's metrics and weights."""
    from safetensors import safe_open

    from thor_core.rl.run import check_adapter_checkpoint

    _, problems, _ = reference
    lora = {"method": "lora", "lora_r": 4, "lora_alpha": 8}
    rl_scripted.run(tmp_path / "ref", problems, **lora)
    rl_scripted.run(tmp_path / "cut", problems, steps=1, **lora)  # ends after step 1, its checkpoint kept
    with safe_open(str(tmp_path / "cut" / "checkpoints" / "step-1" / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    assert saved and all("lora_" in name for name in saved)
    rl_scripted.run(tmp_path / "cut", problems, **lora)  # steps 1 -> 2: resumes from step-1's checkpoint
    ref, resumed = _metrics(tmp_path / "ref"), _metrics(tmp_path / "cut")
    assert [r["step"] for r in resumed] == [1, 2]
    for key in ("reward", "loss", "grad_norm", "rows"):
        assert ref[1][key] == pytest.approx(resumed[1][key], rel=1e-5), key
    ref_w, res_w = _weights(tmp_path / "ref"), _weights(tmp_path / "cut")  # final/: merged into the base
    assert all(torch.allclose(ref_w[n], res_w[n], atol=1e-6) for n in ref_w)
    # loaded with strict=False, a checkpoint that lacks a trainable tensor is refused rather than half-loaded
    from thor_core.models import load_model_and_tokenizer

    full = load_model_and_tokenizer(rl_scripted.MODEL)[0]  # every tensor trainable, none of them saved there
    with pytest.raises(RuntimeError, match="lacks .* trainable tensors"):
        check_adapter_checkpoint(tmp_path / "cut" / "checkpoints" / "step-2", full)


def test_two_processes_under_accelerate_match_one_process(reference):
    root, problems, _ = reference
    out = root / "ddp"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(REPO_ROOT / "params/accelerate/cpu-2proc.yaml"), str(Path(__file__).parent / "rl_scripted.py"),
        str(out), str(problems), "{}",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ref, two = _metrics(root / "ref"), _metrics(out)
    # Each rank rolls out its half of the questions; the rows are gathered, so filters, advantages and
    # the token-mean normaliser are the whole batch's; only the order of float sums differs.
    for a, b in zip(ref, two):
        for key in ("reward", "rows", "trained_tokens", "step_pass_rate"):
            assert a[key] == b[key], key
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    ref_w, two_w = _weights(root / "ref"), _weights(out)
    worst = max(float((ref_w[n] - two_w[n]).abs().max()) for n in ref_w)
    assert worst < 1e-5, worst


def test_lora_weights_reach_the_engine_merged(tiny):
    from peft import LoraConfig, get_peft_model

    from thor_core.rl.policy import engine_weights

    model, _ = tiny
    import copy

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)  # B starts at 0: make the adapter do something
    pushed = dict(engine_weights(peft_model))
    merged = dict(copy.deepcopy(peft_model).merge_and_unload().named_parameters())
    assert set(pushed) == set(merged) == set(dict(model.named_parameters()))
    assert all(torch.allclose(pushed[n], merged[n], atol=1e-6) for n in merged)
    assert any(not torch.equal(pushed[n], p) for n, p in model.named_parameters())


def test_bad_settings_and_missing_inputs_are_named(reference, tmp_path):
    from thor_core.rl.config import RLParams, load_params
    from thor_core.rl.run import resolve_start_model

    with pytest.raises(ValueError, match="group_size"):
        RLParams(group_size=1)
    with pytest.raises(Exception, match="mode"):
        load_params(overrides={"mode": "grpo"})
    with pytest.raises(FileNotFoundError, match="notebook 02"):
        resolve_start_model("outputs/nowhere/02_sft/final")
    root, problems, _ = reference
    with pytest.raises(ValueError, match="other settings.*learning_rate"):
        rl_scripted.run(root / "ref", problems, learning_rate=1e-3, steps=3)


def test_the_papers_separate_losses_with_several_updates_kl_and_truncated_is(reference):
    root, problems, _ = reference
    out = root / "variant"
    rl_scripted.run(out, problems, steps=1, combine="separate", updates_per_batch=2, kl_beta=0.01, tis_cap=2.0)
    [row] = _metrics(out)
    assert row["optimizer_steps"] == 2 and row["kl"] >= 0 and row["loss"] == row["loss"]
    assert row["rows"] == 14  # the same batch as the joint on-policy run; only the objective differs
    assert _metrics(root / "ref")[0]["loss"] != pytest.approx(row["loss"])


def test_one_update_per_batch_has_ratio_one_and_several_let_the_clips_act(reference):
    """On-policy (the reference run, U = 1) the ratio is exactly 1 and nothing is clipped. Under the gpu profiles'
    schedule (U = 40) the old log-probs are taken before the first update and later mini-batches see moved
    parameters, so the clips act; with fewer rows than U (14 here) each row is its own optimizer step."""
    import yaml

    root, problems, _ = reference
    for row in _metrics(root / "ref"):
        assert row["optimizer_steps"] == 1 and row["clip_frac"] == 0 and row["ratio_std"] == 0
        assert row["ratio_mean"] == row["ratio_min"] == row["ratio_max"] == 1
    gpu = yaml.safe_load((REPO_ROOT / "params/gpu-1.5b/03_rl.yaml").read_text())["updates_per_batch"]
    assert gpu > 14
    out = root / "off-policy"
    rl_scripted.run(out, problems, steps=1, updates_per_batch=gpu, learning_rate=1e-2)  # a large LR: moves at once
    [row] = _metrics(out)
    assert row["optimizer_steps"] == 14 and row["rows"] == 14  # the reference's first batch, one row per update
    assert row["ratio_min"] < 0.8 or row["ratio_max"] > 1.28
    assert row["ratio_std"] > 0 and row["clip_frac"] > 0


def test_cot_mode_runs_without_tools(reference):
    root, problems, _ = reference
    rl_scripted.run(root / "cot", problems, steps=1, mode="cot")
    [row] = _metrics(root / "cot")
    assert row["calls_per_rollout"] == 0 and row["step_rollouts"] == 0 and row["episode_rollouts"] == 8
