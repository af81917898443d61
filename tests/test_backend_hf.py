"""The hf backend computes what plain transformers computes, with rows, holes and all (on the tiny random Qwen: mechanics)."""

import asyncio

import pytest
import torch

from thor_core.backends.base import GREEDY, SamplingParams, SegmentRequest
from thor_core.backends.hf import HFBackend

pytestmark = pytest.mark.model


def chat_ids(tokenizer, text):
    return list(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
    )


def reference(model, ids, n):
    with torch.no_grad():
        return model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)[0, len(ids) :].tolist()


@pytest.fixture(scope="module")
def backend(tiny):
    model, tokenizer = tiny
    with HFBackend(model, tokenizer, max_batch=3) as b:
        yield b


def gather(*coros):
    async def main():
        return await asyncio.gather(*coros)

    return asyncio.run(main())


def test_batched_greedy_equals_generate_and_resume_and_backtrack_stay_exact(tiny, backend):
    model, tok = tiny
    prompts = [
        chat_ids(tok, p) for p in ("What is 2+2?", "Tell a long story about a dragon and primes.", "List colors.")
    ]
    segs = gather(
        *(
            backend.generate(SegmentRequest(ids=p, max_new_tokens=24, sampling=GREEDY, key=f"r{i}"))
            for i, p in enumerate(prompts)
        )
    )
    for p, s in zip(prompts, segs):
        ref = reference(model, p, 24)
        assert s.ids == ref[: len(s.ids)]
        assert len(s.logprobs) == len(s.ids)

    # resume the long one after an inserted block: only new tokens are fed
    context = prompts[1] + segs[1].ids + tok.encode("\n```output\n42\n```\n", add_special_tokens=False)
    [resumed] = gather(backend.generate(SegmentRequest(ids=context, max_new_tokens=16, sampling=GREEDY, key="r1")))
    assert resumed.ids == reference(model, context, 16)[: len(resumed.ids)]

    # backtrack into the cached context: dropped slots become holes, the result stays exact
    slots_before = backend.cache_slots
    cut = context[:-12] + tok.encode(" Let me retry.", add_special_tokens=False)
    [retried] = gather(backend.generate(SegmentRequest(ids=cut, max_new_tokens=16, sampling=GREEDY, key="r1")))
    assert retried.ids == reference(model, cut, 16)[: len(retried.ids)]
    assert backend.cache_slots >= slots_before  # holes, not copies

    for key in ("r0", "r1", "r2"):
        backend.release(key)


def test_seeded_sampling_is_reproducible_and_seeds_differ(tiny, backend):
    _, tok = tiny
    prompt = chat_ids(tok, "Name an animal.")
    sampling = SamplingParams(temperature=1.0, top_p=0.95, top_k=50)
    a, b, c = gather(
        *(backend.generate(SegmentRequest(ids=prompt, max_new_tokens=12, sampling=sampling, seed=s)) for s in (1, 1, 2))
    )
    assert a.ids == b.ids
    assert a.ids != c.ids


def test_more_requests_than_rows_all_finish(tiny, backend):
    _, tok = tiny
    prompt = chat_ids(tok, "Count to five.")
    segs = gather(
        *(
            backend.generate(SegmentRequest(ids=prompt, max_new_tokens=6 + i, sampling=GREEDY, key=f"many{i}"))
            for i in range(7)
        )
    )
    assert [len(s.ids) <= 6 + i for i, s in enumerate(segs)] == [True] * 7
    for i in range(7):
        backend.release(f"many{i}")


def test_stop_string_ends_the_segment(tiny, backend):
    _, tok = tiny
    prompt = chat_ids(tok, "Write a sentence about the sea.")
    [s] = gather(backend.generate(SegmentRequest(ids=prompt, max_new_tokens=40, sampling=GREEDY, stop=(" ",))))
    assert s.finish == "stop" and " " in tok.decode(s.ids)
    assert " " not in tok.decode(s.ids[:-1])


def test_load_weights_changes_outputs_and_back(tiny):
    model, tok = tiny
    prompt = chat_ids(tok, "What is the capital of France?")
    with HFBackend(model, tok, max_batch=2) as b:
        [before] = gather(b.generate(SegmentRequest(ids=prompt, max_new_tokens=8, sampling=GREEDY, key="w")))
        original = {n: p.detach().clone() for n, p in model.named_parameters()}
        name = "model.norm.weight"
        b.load_weights([(name, -original[name])])
        [changed] = gather(b.generate(SegmentRequest(ids=prompt, max_new_tokens=8, sampling=GREEDY, key="w")))
        b.load_weights([(name, original[name])])
        [after] = gather(b.generate(SegmentRequest(ids=prompt, max_new_tokens=8, sampling=GREEDY, key="w")))
    assert changed.ids != before.ids
    assert after.ids == before.ids


def test_sliding_window_models_are_refused(tiny):
    model, tok = tiny
    model.config.use_sliding_window = True
    try:
        with pytest.raises(ValueError, match="full-attention"):
            HFBackend(model, tok)
    finally:
        model.config.use_sliding_window = False
