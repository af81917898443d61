"""thor_core.sft.train: labels, settings, and real TRL training runs.

The data are crafted TIRGen-style records (reasoning, a ```python block, the
inserted ```output block, a boxed answer), tokenised with the model's tokenizer
and written with ``thor_core.data.sft_examples.save_sft_dataset``, so these tests do not
depend on a TIRGen run. Model tests train for a few steps at a high learning
rate (1e-4) on 4 examples of ~170 tokens. The mechanics run on the tiny random
Qwen (``models.TINY_MODEL``); that training teaches something runs on the
embedded SmolLM2 (``REAL``), the smallest real model.

Covered: the labels (prompt masked, output blocks masked only when asked, ids
unchanged); parameter checks and the CLI's errors; the SFTConfig mapping;
a full fine-tune that changes every parameter, saved in HF
format with the tokenizer and chat template; a real model that learns the crafted format (loss halves, greedy
writes a python block); a finished run not redone,
other settings refused, ``overwrite`` redoing; LoRA merge logits equal the
adapter's; packed and padded batches give the same loss; resumption after a
SIGKILL mid-epoch; the checkpoint through the hf and vLLM backends; two
processes under accelerate against one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from thor_core import hardware, tir
from thor_core.data.sft_examples import IGNORE, load_sft_dataset, save_sft_dataset
from thor_core.files import REPO_ROOT, read_jsonl_rows
from thor_core.models import TINY_MODEL
from thor_core.params import ParamsError
from thor_core.record import ToolCall, Trajectory
from thor_core.sft import folder as sft_run
from thor_core.sft import train as sft
from thor_core.sft.config import SFTParams

MODEL = TINY_MODEL
REAL = "embedded:smollm2-135m-instruct"
# Fast settings shared by the in-process run, the resume run and the two-process run.
FAST = dict(
    learning_rate=1.0e-4,
    lr_scheduler_type="constant",
    warmup_ratio=0.0,
    global_batch_size=2,
    per_device_batch_size=1,
    max_length=256,
    progress="lines",
)


def crafted_records(tokenizer, n: int, seed: int = 0) -> list[Trajectory]:
    """``n`` TIRGen-like records: multiply two numbers with one Python call, then box the product."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        question = f"Compute ${a} \\times {b}$."
        code = f"```python\nprint({a} * {b})\n```\n"
        pieces = [
            ("a", f"I will multiply with Python.\n{code}"),
            ("t", tir.render_output_block(str(a * b))),
            ("a", f"The product is {a * b}, so the answer is $\\boxed{{{a * b}}}$."),
        ]
        ids, sources = [], ""
        for source, text in pieces:
            piece = tokenizer.encode(text, add_special_tokens=False)
            ids += piece
            sources += source * len(piece)
        code_end = sources.index("t")
        code_len = len(tokenizer.encode(code, add_special_tokens=False))
        call = ToolCall(
            code=f"print({a} * {b})",
            success=True,
            observation=str(a * b),
            code_span=(code_end - code_len, code_end),
            output_span=(code_end, sources.rindex("t") + 1),
        )
        records.append(
            Trajectory(
                question_id=f"craft/{seed}/{i}",
                question=question,
                gold_answer=str(a * b),
                prompt_ids=tokenizer.encode(tir.render_prompt(tokenizer, question), add_special_tokens=False),
                completion_ids=ids,
                mask=[int(s != "t") for s in sources],
                tool_calls=[call],
                completion_text="".join(text for _, text in pieces),
                final_answer=str(a * b),
                correct=True,
                finish_reason="answer",
                metadata={"kind": "arithmetic", "level": 1},
                token_sources=sources,
            )
        )
    return records


def write_dataset(folder: Path, n: int = 4, seed: int = 0, model: str = MODEL) -> Path:
    from transformers import AutoTokenizer

    from thor_core.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    save_sft_dataset(crafted_records(tokenizer, n, seed), tokenizer, folder)
    return folder


@pytest.fixture(scope="module")
def dataset4(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("sft-data") / "sft", n=4)


# ------------------------------------------------------------------ fast


def test_labels_mask_the_prompt_and_output_blocks_only_when_asked(tmp_path):
    folder = write_dataset(tmp_path / "sft", n=2)
    raw = load_sft_dataset(folder)
    for mask in (False, True):
        prepared = sft.prepare_dataset(raw, mask_tool_outputs=mask)
        assert prepared.column_names == ["input_ids", "labels"]
        for ex, row in zip(raw, prepared):
            assert row["input_ids"] == ex["input_ids"]  # ids unchanged
            tool = ex["tool_output_mask"]
            prompt_len = next(i for i, label in enumerate(ex["labels"]) if label != IGNORE)
            assert sum(tool) > 5 and tool[:prompt_len] == [0] * prompt_len
            for i, (tid, label) in enumerate(zip(row["input_ids"], row["labels"])):
                if i < prompt_len:
                    assert label == IGNORE  # the prompt is never trained on
                elif tool[i]:
                    assert label == (IGNORE if mask else tid)  # output blocks follow the option only
                else:
                    assert label == tid  # the model's own tokens always count
    with pytest.raises(FileNotFoundError, match="01_tirgen"):
        load_sft_dataset(tmp_path / "missing")


def test_an_export_made_by_another_tokenizer_is_refused_before_any_training(tmp_path):
    from transformers import AutoTokenizer

    from thor_core.data.sft_examples import FINGERPRINT, check_tokenizer
    from thor_core.models import resolve_model

    folder = write_dataset(tmp_path / "sft", n=2)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(MODEL))
    check_tokenizer(folder, tokenizer)  # the tokenizer that made it: accepted
    tokenizer.add_tokens(["<another-vocabulary>"])
    with pytest.raises(ValueError, match="was tokenised by .*actor_model"):
        check_tokenizer(folder, tokenizer)
    made_with = json.loads((folder / FINGERPRINT).read_text())
    (folder / FINGERPRINT).write_text(json.dumps({**made_with, "vocab_sha256": "0" * 64}))  # as if another model's
    p = SFTParams(model=MODEL, dataset=str(folder), output_dir=str(tmp_path / "run"), **FAST)
    with pytest.raises(ValueError, match=f"not by the tokenizer of {MODEL}"):
        sft.train(p)
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_params_are_checked_by_name_and_every_profile_loads(capsys):
    with pytest.raises(ParamsError) as e:
        sft.load_params(overrides={"method": "qlora", "learning_rat": 1.0, "max_length": "4096"})
    text = str(e.value)
    assert "method" in text and "'full'" in text and "'lora'" in text
    assert "did you mean 'learning_rate'" in text and "max_length" in text
    with pytest.raises(ValueError, match="global_batch_size"):
        SFTParams(global_batch_size=6, per_device_batch_size=4)
    for profile in ("smoke", "cpu", "cpu-full", "gpu-1.5b", "gpu-7b"):
        p = sft.load_params(REPO_ROOT / "params" / profile / "02_sft.yaml")
        assert p.tirgen_dir == f"outputs/{profile}/01_tirgen"
    gpu = sft.load_params(REPO_ROOT / "params/gpu-7b/02_sft.yaml")
    assert (gpu.learning_rate, gpu.warmup_ratio, gpu.num_train_epochs, gpu.global_batch_size, gpu.max_length) == (
        2.0e-6,
        0.05,
        1.0,
        128,
        4096,
    )
    assert sft.main(["--config", "params/cpu/02_sft.yaml", "--learning_rat", "1"]) == 2
    assert "did you mean 'learning_rate'" in capsys.readouterr().err
    assert sft.main(["--help"]) == 0 and "--mask_tool_outputs" in capsys.readouterr().out


def test_accelerate_configs_parse_and_leave_precision_to_the_profile():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for path in sorted((REPO_ROOT / "params" / "accelerate").glob("*.yaml")):
        config = load_config_from_file(str(path))
        kinds[path.stem] = str(config.distributed_type).rsplit(".", 1)[-1]
        assert config.mixed_precision == "no", path.name
    assert kinds == {
        "cpu-2proc": "MULTI_GPU",
        "multi_gpu": "MULTI_GPU",
        "fsdp": "FSDP",
        "deepspeed-zero2": "DEEPSPEED",
        "deepspeed-zero3": "DEEPSPEED",
    }


def test_sft_config_overrides_trl_defaults():
    p = SFTParams(global_batch_size=128, per_device_batch_size=4)
    cfg = sft.sft_config(p, n_processes=2)
    assert cfg.gradient_accumulation_steps == 16 and cfg.per_device_train_batch_size == 4
    assert (cfg.max_length, cfg.gradient_checkpointing, cfg.bf16, cfg.learning_rate) == (4096, False, False, 2.0e-6)
    assert cfg.warmup_steps == 0.05 and cfg.lr_scheduler_type == "constant_with_warmup" and cfg.optim == "adamw_torch"
    assert cfg.model_init_kwargs["dtype"] == "float32" and cfg.report_to == ["tensorboard"]  # our default
    with pytest.raises(ValueError, match="not a multiple"):
        sft.sft_config(SFTParams(global_batch_size=4, per_device_batch_size=4), n_processes=3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_bf16_autocast_is_accepted_on_a_machine_without_a_gpu():
    # transformers refuses bf16 on a CPU-only machine unless use_cpu is set (the cpu profile's SFT runs under it);
    # a CPU without bf16 instructions gets fp32 instead (provenance.bf16_autocast: emulated bf16 is 20-34x slower)
    cfg = sft.sft_config(SFTParams(bf16=True), n_processes=1)
    assert cfg.bf16 == hardware.fast_bf16("cpu") and cfg.use_cpu


def test_run_folder_rules(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):  # checkpoint-6: killed while saving
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert [c.name for c in sft_run.complete_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    sft_run.drop_torn_checkpoints(tmp_path)
    assert not (tmp_path / "checkpoint-6").exists() and (tmp_path / "checkpoint-4").exists()
    (tmp_path / sft_run.LOSS_LOG).write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')  # a line being written
    assert sft_run.read_loss(tmp_path) == [{"step": 1, "loss": 2.0}]
    p = SFTParams(output_dir=str(tmp_path))
    sft_run.check_settings(tmp_path, p, "checkpoints")  # the first start records them
    sft_run.check_settings(tmp_path, dataclasses.replace(p, save_steps=7, overwrite=True), "checkpoints")
    with pytest.raises(ValueError, match="learning_rate, max_length differ.*overwrite=True"):
        sft_run.check_settings(tmp_path, dataclasses.replace(p, learning_rate=1.0, max_length=8), "checkpoints")
    sft_run.forget_settings(tmp_path)  # no checkpoint to resume: a new start's settings hold
    sft_run.check_settings(tmp_path, dataclasses.replace(p, learning_rate=1.0), "checkpoints")
    assert not sft_run.is_finished(tmp_path)
    sft_run.clear(tmp_path)
    assert not list(tmp_path.iterdir())


def test_heldout_problems_leave_out_what_training_saw(tmp_path):
    from transformers import AutoTokenizer

    from thor_core.data.problems import generate_problems
    from thor_core.evaluation.before_after import CheckParams, answer_metrics, paired_tests
    from thor_core.models import resolve_model
    from thor_core.sft.report import heldout_problems

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(MODEL))
    records = crafted_records(tokenizer, 3)
    taken = generate_problems(3, seed=9001)[1]  # a held-out candidate that the training data also holds
    records[0].question = taken.question
    save_sft_dataset(records, tokenizer, tmp_path / "sft")
    p = SFTParams(dataset=str(tmp_path / "sft"), tirgen_dir=str(tmp_path / "no-tirgen-run"))
    problems, note = heldout_problems(p, CheckParams(heldout_n=5), load_sft_dataset(tmp_path / "sft"))
    assert len(problems) == 5 and note["excluded"] == 1 and taken.id not in {q.id for q in problems}
    assert note["checked_against"] == ["sft dataset"]  # no TIRGen run folder: nothing recorded to exclude

    after = crafted_records(tokenizer, 2)  # code, a call each, boxed, correct
    before = [dataclasses.replace(r, tool_calls=[], completion_text="It is 5.", correct=False) for r in after]
    for r in before + after:
        r.metadata["sample"] = 0
    m = answer_metrics(after)
    assert (m["n"], m["code_block_rate"], m["call_success_rate"], m["boxed_rate"], m["accuracy"]) == (2, 1, 1, 1, 1)
    assert answer_metrics(before)["code_block_rate"] == 0 and answer_metrics(before)["call_success_rate"] is None
    tests = paired_tests(before, after)
    assert tests["correct"]["only_second"] == 2 and tests["correct"]["p_value"] == 0.5


# ------------------------------------------------------- model-backed


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, dataset4):
    out = tmp_path_factory.mktemp("sft-full")
    p = SFTParams(model=MODEL, dataset=str(dataset4), output_dir=str(out), max_steps=4, save_steps=100, **FAST)
    t0 = time.monotonic()
    summary = sft.train(p)
    return p, summary, out, time.monotonic() - t0


@pytest.mark.model
def test_the_full_run_logs_its_loss_to_tensorboard_in_its_folder(full_run):
    """report_to's default (tensorboard), TRL's callback: events in <out>/tb with loss.jsonl's numbers."""
    from test_tracking import tensorboard_scalars

    from thor_core.sft.folder import LOSS_LOG

    p, _, out, _ = full_run
    assert p.report_to == "tensorboard"  # the default
    losses = {r["step"]: r["loss"] for r in read_jsonl_rows(out / LOSS_LOG) if "loss" in r}
    assert losses and losses == pytest.approx(tensorboard_scalars(out / "tb")["train/loss"], rel=1e-5)


@pytest.mark.model
def test_full_finetune_changes_every_parameter(full_run, tiny):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p, summary, out, _ = full_run
    assert summary["status"] == "done" and summary["steps"] == 4 and summary["dataset_size"] == 4
    assert [row["step"] for row in sft_run.read_loss(out)] == [1, 2, 3, 4]
    base = tiny[0]
    trained = dict(AutoModelForCausalLM.from_pretrained(out / "final", dtype=torch.float32).named_parameters())
    unchanged = [n for n, w in base.named_parameters() if torch.equal(w, trained[n])]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    assert summary["trainable_parameters"] == sum(w.numel() for w in base.parameters())
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    assert tokenizer.chat_template and "<|im_start|>assistant" in tir.render_prompt(tokenizer, "2+2?")


@pytest.mark.model
def test_a_finished_run_is_not_redone_and_other_settings_are_refused(full_run):
    p, summary, out, _ = full_run
    before = (out / sft_run.LOSS_LOG).read_text()
    t0 = time.monotonic()
    assert sft.train(p) == summary
    assert time.monotonic() - t0 < 10 and (out / sft_run.LOSS_LOG).read_text() == before
    with pytest.raises(ValueError, match="learning_rate"):
        sft.train(dataclasses.replace(p, learning_rate=3.0e-4))


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.model
def test_lora_merge_gives_the_adapter_logits_and_overwrite_redoes_the_run(tmp_path, dataset4, tiny):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from thor_core.models import load_model_and_tokenizer

    out = tmp_path / "lora"
    lora = dict(FAST, learning_rate=1.0e-3)
    p = SFTParams(
        model=MODEL,
        dataset=str(dataset4),
        output_dir=str(out),
        method="lora",
        max_steps=1,
        save_steps=100,
        **{k: v for k, v in lora.items()},
    )
    assert sft.train(p)["steps"] == 1
    p2 = dataclasses.replace(p, max_steps=2)
    with pytest.raises(ValueError, match="max_steps"):
        sft.train(p2)
    summary = sft.train(dataclasses.replace(p2, overwrite=True))
    assert summary["steps"] == 2 and summary["steps_this_session"] == 2 and summary["resumed_from"] is None
    assert len({row["session"] for row in sft_run.read_loss(out)}) == 1 and len(sft_run.read_loss(out)) == 2
    assert (out / "adapter" / "adapter_config.json").is_file()

    ids = load_sft_dataset(dataset4)[0]["input_ids"]
    fresh_base, _ = load_model_and_tokenizer(MODEL)  # PeftModel edits its base in place: not the shared one
    adapted = PeftModel.from_pretrained(fresh_base, str(out / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "final", dtype=torch.float32).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with_adapter, after_merge, base = _logits(adapted, ids), _logits(merged, ids), _logits(tiny[0], ids)
    assert (with_adapter - base).abs().max() > 0.05  # the adapter learned something to merge
    # fp32: merging folds B @ A into W, a different order of float sums. Measured: max |diff| 1.4e-4 on
    # logits up to ~44 in size, while the adapter moved them by up to ~15. Tolerance: atol 1e-3.
    assert torch.allclose(after_merge, with_adapter, atol=1e-3, rtol=0), (after_merge - with_adapter).abs().max()


@pytest.mark.model
def test_packed_and_padded_batches_give_the_same_loss(dataset4, tiny):
    """Packing (TRL's bfd, padding-free rows with per-sequence position ids) is correct with CPU SDPA."""
    import torch
    from trl import SFTTrainer

    model, tokenizer = tiny
    data = sft.prepare_dataset(load_sft_dataset(dataset4), limit=3)
    losses = {}
    for packing in (False, True):
        p = SFTParams(
            model=MODEL,
            output_dir="/tmp/unused",
            packing=packing,
            max_length=1024,
            per_device_batch_size=1 if packing else 3,
            global_batch_size=1 if packing else 3,
        )
        trainer = SFTTrainer(model=model, args=sft.sft_config(p, 1), train_dataset=data, processing_class=tokenizer)
        batch = next(iter(trainer.get_train_dataloader()))
        assert batch["input_ids"].shape[0] == 1 if packing else 3  # one packed row, or three padded ones
        model.eval()
        with torch.no_grad():
            losses[packing] = trainer.compute_loss(model, dict(batch)).item()
            if packing:  # the same row with positions running across the sequences: must differ
                leaky = {k: v for k, v in batch.items() if not k.startswith(("cu_seq", "max_length"))}
                leaky["position_ids"] = torch.arange(batch["input_ids"].shape[1])[None]
                losses["leaky"] = trainer.compute_loss(model, leaky).item()
    assert abs(losses[True] - losses[False]) < 1e-4 * losses[False], losses
    assert abs(losses["leaky"] - losses[False]) > 1e-3, losses  # the check can fail


def _cli(dataset: Path, out: Path, **settings) -> list[str]:
    args = [
        sys.executable,
        "-m",
        "thor_core.sft",
        "--model",
        MODEL,
        "--dataset",
        str(dataset),
        "--output_dir",
        str(out),
    ]
    for k, v in settings.items():
        args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    return args


@pytest.mark.model
def test_a_run_killed_mid_epoch_resumes_from_its_last_checkpoint(tmp_path, dataset4):
    out = tmp_path / "resume"
    # 4 examples, one per step, 6 steps: checkpoint-3 falls inside epoch 1, the kill after step 5 inside epoch 2
    cmd = _cli(dataset4, out, **dict(FAST, global_batch_size=1, max_steps=6, save_steps=3))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log_file = open(tmp_path / "first.log", "w")  # a file, not a pipe nobody drains
    first = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not (sft_run.complete_checkpoints(out) and max((r["step"] for r in sft_run.read_loss(out)), default=0) >= 5):
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the first run made no checkpoint in time"
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    log_file.close()
    killed_log = sft_run.read_loss(out)
    resumed_step = int(sft_run.complete_checkpoints(out)[-1].name.split("-")[1])
    assert not sft_run.is_finished(out) and resumed_step == 3

    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = sft_run.read_summary(out)
    assert summary["status"] == "done" and summary["steps"] == 6
    assert summary["resumed_from"].endswith(f"checkpoint-{resumed_step}")
    assert summary["steps_this_session"] == 6 - resumed_step  # the steps before the checkpoint were not redone
    log = sft_run.read_loss(out)
    assert [r["step"] for r in log] == list(range(1, 7))
    first_pid = killed_log[0]["session"]
    assert [r["session"] == first_pid for r in log] == [s <= resumed_step for s in range(1, 7)]
    # Steps 4 and 5, which the killed run had taken after its checkpoint: the same batch (step 4: the
    # 4th of epoch 1, so the resumed run skipped 3; step 5: epoch 2's first) and the same weights,
    # optimizer and scheduler give the same loss; another batch, or fresh Adam moments, would not.
    redone = [(r["loss"], log[r["step"] - 1]["loss"]) for r in killed_log if r["step"] > resumed_step]
    assert len(redone) >= 2
    for before, after in redone:
        assert abs(before - after) <= 1e-5 * abs(before), redone


def _greedy(backend, prompt_ids, n=16):
    from thor_core.backends import GREEDY, SegmentRequest

    return asyncio.run(backend.generate(SegmentRequest(prompt_ids, max_new_tokens=n, sampling=GREEDY))).ids


@pytest.mark.model
def test_the_checkpoint_generates_through_the_hf_backend(full_run):
    import torch
    from transformers import AutoModelForCausalLM

    from thor_core.backends import make_backend

    final = full_run[2] / "final"
    with make_backend("hf", str(final)) as backend:
        prompt = backend.tokenizer.encode(tir.render_prompt(backend.tokenizer, "Compute $123 \\times 456$."))
        ids = _greedy(backend, prompt)
    model = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False)[0, len(prompt) :].tolist()
    assert ids == expected[: len(ids)] and len(ids) > 0


@pytest.mark.model
def test_a_real_model_learns_the_crafted_format(tmp_path):
    """Learning, so a real model (SmolLM2-135M): 4 steps halve the loss and greedy decoding then writes the
    crafted ```python block (measured: loss 1.32 -> 0.2-0.35)."""
    from thor_core.backends import make_backend

    data = write_dataset(tmp_path / "sft", n=4, model=REAL)
    p = SFTParams(model=REAL, dataset=str(data), output_dir=str(tmp_path / "run"), max_steps=4, save_steps=100, **FAST)
    assert sft.train(p)["steps"] == 4
    losses = [row["loss"] for row in sft_run.read_loss(tmp_path / "run")]
    assert losses[-1] < 0.5 * losses[0], losses
    with make_backend("hf", str(tmp_path / "run" / "final")) as backend:
        prompt = backend.tokenizer.encode(tir.render_prompt(backend.tokenizer, "Compute $123 \\times 456$."))
        assert "python" in backend.tokenizer.decode(_greedy(backend, prompt))


@pytest.mark.vllm
@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_the_checkpoint_generates_through_the_vllm_backend(full_run):
    from thor_core.backends import make_backend

    final = str(full_run[2] / "final")
    with make_backend("hf", final) as hf:
        prompt = hf.tokenizer.encode(tir.render_prompt(hf.tokenizer, "Compute $123 \\times 456$."))
        expected = _greedy(hf, prompt)
    with make_backend("vllm", final, dtype="float32", max_model_len=1024, kv_cache_gib=1) as backend:
        ids = _greedy(backend, prompt)
    assert ids == expected and len(ids) > 0  # float32 on both sides


@pytest.mark.model
def test_two_processes_under_accelerate_follow_the_single_process_loss_curve(full_run, tmp_path):
    p, single, single_out, _ = full_run
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO_ROOT / "params/accelerate/cpu-2proc.yaml"),
        *_cli(Path(p.dataset), out, max_steps=4, save_steps=100, **FAST)[1:],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core per rank
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = sft_run.read_summary(out)
    assert summary["processes"] == 2 and summary["gradient_accumulation_steps"] == 1
    assert single["processes"] == 1 and single["gradient_accumulation_steps"] == 2  # same global batch of 2
    one, two = sft_run.read_loss(single_out), sft_run.read_loss(out)
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3, 4]
    # The same examples per step (seeded sampler, ranks take alternate micro-batches) and a token-mean
    # over the global batch on both sides; only the order of float sums differs. Measured here: the
    # curves agree to <1e-6 relative (bit for bit with one thread per process); stated tolerance 1e-4.
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * a["loss"], (one, two)
