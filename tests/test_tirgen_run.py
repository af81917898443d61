"""A TIRGen run on scripted actor and critic: resume after SIGKILL, shard + merge, the SFT export, TRL loading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from thor_core import tir
from thor_core.backends.scripted import ScriptedBackend
from thor_core.data import sft_examples as sft_data
from thor_core.data.benchmarks import Problem
from thor_core.data.heldout import read_problems, write_problems
from thor_core.record import read_jsonl
from thor_core.tirgen import steps as tirgen

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_tirgen import actor_policy, make_critic_policy  # noqa: E402


def problems(n: int) -> list[Problem]:
    """Questions the scripted actor answers 157; every third has another gold answer, so grading matters."""
    return [
        Problem(f"p{i:02d}", f"QMARK {i}: what is twelve times thirteen, plus one?", "157" if i % 3 else "158",
                "test", "train", {"kind": "arithmetic", "level": 1 + i % 3})
        for i in range(n)
    ]  # fmt: skip


def params(**kw) -> tirgen.TIRGenParams:
    return tirgen.TIRGenParams(**{"k": 2, "max_in_flight": 4, "one_call_keep": 1.0, **kw})


def generate(tok, sandbox, probs, out_dir, **kw):
    p = params(**kw)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_problems(probs, out_dir)
    actor, critic = ScriptedBackend(tok, actor_policy), ScriptedBackend(tok, make_critic_policy())
    tirgen.generate(actor, critic, sandbox, probs, p, out_dir, progress=False)
    return tirgen.finalize(out_dir, tok, p)


def test_run_grades_filters_and_exports(qwen_tokenizer, sandbox, tmp_path):
    tok = qwen_tokenizer
    stats = generate(tok, sandbox, problems(6), tmp_path / "run")
    attempts = read_jsonl(tmp_path / "run" / "attempts.jsonl")
    assert len(attempts) == 12 and all(r.correct is not None for r in attempts)
    assert sum(r.correct for r in attempts) == 8  # p00 and p03 have gold 158
    assert stats["kept"] == 4 and stats["keep_rate"] == 4 / 6
    assert [row["stage"] for row in stats["funnel"]][:3] == ["questions", "generated", "critic_ok"]
    assert stats["calls_histogram"] == {2: 4}
    assert stats["critic"]["rewritten"] == 24 and stats["critic"]["rewrite_share_of_judged"] == 0.5
    assert set(stats["token_sources"]) == {"a", "c", "t"} and stats["by_level"]["1"]["questions"] == 2

    kept = read_jsonl(tmp_path / "run" / "kept.jsonl")
    ds = sft_data.load_sft_dataset(tmp_path / "run" / "sft")
    assert len(ds) == 4
    for row, r in zip(ds, kept, strict=True):
        prompt = tok.encode(tir.render_prompt(tok, r.question, "tir"), add_special_tokens=False)
        n = len(prompt)
        assert row["input_ids"][:n] == prompt  # the TIR inference prompt, not the actor's CoT prompt
        assert row["input_ids"][n:] == r.completion_ids  # the record's ids, unchanged (it ends with EOS)
        assert row["labels"] == [-100] * n + r.completion_ids  # the authors' default: outputs trained on
        assert row["tool_output_mask"][n:] == [int(s == "t") for s in r.token_sources]
        assert row["messages"][-1]["role"] == "assistant" and "```output" in row["messages"][-1]["content"]


def test_export_marks_output_blocks_and_ends_every_turn(qwen_tokenizer, sandbox, tmp_path):
    """The export trains on every completion token and marks the output blocks; masking them is SFT's setting."""
    tok = qwen_tokenizer
    generate(tok, sandbox, problems(2), tmp_path / "run")
    [r] = read_jsonl(tmp_path / "run" / "kept.jsonl")
    ex = sft_data.sft_example(r, tok)
    n = len(ex["input_ids"]) - len(r.completion_ids)
    assert ex["labels"] == [-100] * n + list(r.completion_ids)
    marked = tok.decode([t for t, m in zip(ex["input_ids"][n:], ex["tool_output_mask"][n:]) if m])
    assert marked == "".join(tir.render_output_block(c.observation) for c in r.tool_calls)
    # a record that stopped at its answer without EOS gets one end-of-turn token (trained on)
    cut = r.completion_ids[:-1]
    short = type(r)(**{**r.to_dict(), "completion_ids": cut, "mask": r.mask[:-1], "logprobs": None,
                       "token_sources": r.token_sources[:-1]})  # fmt: skip
    ex = sft_data.sft_example(short, tok)
    assert ex["input_ids"][-1] == tok.convert_tokens_to_ids("<|im_end|>") and ex["labels"][-1] == ex["input_ids"][-1]


def test_shards_merge_to_the_unsharded_run(qwen_tokenizer, sandbox, tmp_path):
    tok = qwen_tokenizer
    probs = problems(6)
    whole = generate(tok, sandbox, probs, tmp_path / "whole")
    for i in range(2):
        generate(tok, sandbox, probs[i::2], tmp_path / f"shard{i}", shard=f"{i}/2")
    merged = tirgen.merge([tmp_path / "shard0", tmp_path / "shard1"], tmp_path / "merged", tok, params())
    for key in ("funnel", "calls_histogram", "critic", "kept", "by_level", "token_sources"):
        assert merged[key] == whole[key], key
    a = read_jsonl(tmp_path / "whole" / "kept.jsonl")
    b = read_jsonl(tmp_path / "merged" / "kept.jsonl")
    assert [(r.question_id, r.completion_ids) for r in a] == [(r.question_id, r.completion_ids) for r in b]
    assert sorted(q.id for q in read_problems(tmp_path / "merged")) == [q.id for q in probs]
    with pytest.raises(ValueError, match="different settings"):
        generate(tok, sandbox, probs[:2], tmp_path / "other", shard="0/2", k=1)
        tirgen.merge([tmp_path / "shard0", tmp_path / "other"], tmp_path / "bad", tok, params())


def test_resume_refuses_other_generation_settings(qwen_tokenizer, sandbox, tmp_path):
    generate(qwen_tokenizer, sandbox, problems(2), tmp_path / "run")
    with pytest.raises(ValueError, match="k differ"):
        generate(qwen_tokenizer, sandbox, problems(2), tmp_path / "run", k=3)
    stats = generate(qwen_tokenizer, sandbox, problems(2), tmp_path / "run", nontrivial_code="off")  # filters: free
    assert json.loads((tmp_path / "run" / "timing.json").read_text())["calls"][-1]["new_attempts"] == 0
    assert stats["kept"] == 1


WORKER = """
import sys, time
from transformers import AutoTokenizer
sys.path.insert(0, {tests!r})
from test_tirgen import actor_policy, make_critic_policy
from test_tirgen_run import params, problems
from thor_core.tirgen import steps as tirgen
from thor_core.backends.scripted import ScriptedBackend
from thor_core.models import DEFAULT_MODEL, resolve_model
from thor_core.sandbox import Sandbox, SandboxConfig

def slow(policy, pause_s):
    # the killed run: slow enough that generation outlasts the grader pool's start-up, so graded attempts arrive
    # one by one (with 0.05 s a quiet machine generated all 20 before the first grade, and they were written in a
    # burst); the resumed run needs no window to be killed in and runs at full speed (argv[1] = 0)
    def respond(context):
        time.sleep(pause_s)
        return policy(context)
    return respond

if __name__ == "__main__":
    tok = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    probs = problems(10)
    tirgen.write_problems(probs, {out!r})
    with Sandbox(SandboxConfig(timeout_s=5.0)) as sb:
        actor, critic = ScriptedBackend(tok, slow(actor_policy, float(sys.argv[1]))), ScriptedBackend(tok, make_critic_policy())
        tirgen.generate(actor, critic, sb, probs, params(max_in_flight=2), {out!r}, progress=False)
    print("finished")
"""


def test_a_run_killed_with_sigkill_resumes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(REPO / "tests"), out=str(out)))
    attempts = out / "attempts.jsonl"
    proc = subprocess.Popen([sys.executable, str(script), "0.3"], cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if attempts.exists() and len(attempts.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the worker finished (or died) before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {(r.question_id, r.metadata["sample"]) for r in read_jsonl(attempts)}
    assert 4 <= len(done_before) < 20
    subprocess.run([sys.executable, str(script), "0"], cwd=REPO, check=True, timeout=300)
    records = read_jsonl(attempts)
    keys = [(r.question_id, r.metadata["sample"]) for r in records]
    assert len(keys) == len(set(keys)) == 20  # nothing lost, nothing twice
    calls = json.loads((out / "timing.json").read_text())["calls"]
    assert calls[-1]["new_attempts"] == 20 - len(done_before)  # finished attempts were not redone
    assert calls[0]["wall_s"] is None and calls[-1]["wall_s"] > 0  # the killed call never finished
    assert tirgen.wall_seconds(calls, records) > calls[-1]["wall_s"]  # ... and is timed by its last attempt


@pytest.mark.model
def test_the_export_loads_unchanged_into_trl_sft_trainer(sandbox, tmp_path):
    """TRL 1.16 must train on our ids and labels as given: no re-tokenising, no masks of its own."""
    from trl import SFTConfig, SFTTrainer

    from thor_core.models import TINY_MODEL, load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(TINY_MODEL)  # a fresh copy: it gets trained; mechanics: the tiny model
    generate(tok, sandbox, problems(3), tmp_path / "run")
    ds = sft_data.load_sft_dataset(tmp_path / "run" / "sft").select_columns(["input_ids", "labels"])
    assert len(ds) == 2
    args = SFTConfig(
        output_dir=str(tmp_path / "trl"), per_device_train_batch_size=2, max_steps=1, report_to=[],
        bf16=False, gradient_checkpointing=False, max_length=None, learning_rate=1e-5, use_cpu=True,
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    assert trainer.train_dataset["input_ids"] == ds["input_ids"]
    assert trainer.train_dataset["labels"] == ds["labels"]
    batch = next(iter(trainer.get_train_dataloader()))
    rows = {tuple(x): y for x, y in zip(ds["input_ids"], ds["labels"], strict=True)}
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
        n = next(n for n in range(len(ids), 0, -1) if tuple(ids[:n]) in rows)  # the rest is padding
        assert labels[:n] == rows[tuple(ids[:n])] and all(x == -100 for x in labels[n:])
    assert trainer.train().training_loss > 0


def test_an_empty_export_saves_and_loads(qwen_tokenizer, tmp_path):
    """A run that keeps nothing (the smoke profile, often) still leaves a loadable, typed dataset."""
    sft_data.save_sft_dataset([], qwen_tokenizer, tmp_path / "sft")
    ds = sft_data.load_sft_dataset(tmp_path / "sft")
    assert len(ds) == 0 and set(ds.column_names) == set(sft_data.COLUMNS)
