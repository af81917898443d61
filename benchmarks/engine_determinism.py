"""Does a request's output depend on what else the vLLM engine runs beside it? (issue 25: where the chain stops
being deterministic for a fixed seed.)

Every request is seeded, so its tokens depend only on its logits; the question is whether the logits do. One
engine per comparison group (the kit's ``VLLMBackend``, embedded Qwen2.5-Coder-0.5B by default), T = 1.0:

- ``decode``: 8 short prompts in one batch, then again in the same engine (prompts in the prefix cache), in a
  fresh engine, without prefix caching, admitted in reverse order, and 4 of them alone: decode-only batches of
  other sizes, orders and caches.
- ``batch``: 32 short prompts at once against 4 batches of 8, and 8 prompts admitted 0-4.5 s apart (short
  prefills joining other requests' decodes) against 8 at once.
- ``prefill``: two ~1,100-token prompts (a TIRGen critic prompt's size) alone, then admitted while 8 short requests
  decode (1 s and 3 s after them): the long prompts' tokens and the short ones'.

Each line says how many outputs are token-identical to the reference and where the others first differ.

    .venv/bin/python benchmarks/engine_determinism.py                       # all three, ~15 min on 2 cores
    .venv/bin/python benchmarks/engine_determinism.py --part prefill --out det.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from thor_core.backends import SamplingParams, SegmentRequest, make_backend
from thor_core.hardware import machine
from thor_core.models import DEFAULT_MODEL, resolve_model

LONG = (
    "Here is a worked solution to check, step by step. "
    + " ".join(
        f"Step {i}: we compute {i} times {i + 3} which gives {i * (i + 3)} and add it to the running total."
        for i in range(40)
    )  # fmt: skip
    + " Rewrite the last step as Python code."
)


def request(tok, text: str, seed: int, tokens: int) -> SegmentRequest:
    chat = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    ids = tok.encode(chat, add_special_tokens=False)
    return SegmentRequest(ids=ids, max_new_tokens=tokens, sampling=SamplingParams(temperature=1.0), seed=seed,
                          key=f"s{seed}")  # fmt: skip


def short_requests(tok, n: int, tokens: int) -> list[SegmentRequest]:
    return [request(tok, f"Compute the sum of the first {10 + i} prime numbers using Python.", 1000 + i, tokens)
            for i in range(n)]  # fmt: skip


def generate(backend, requests, delays=None) -> list[list[int]]:
    """All ``requests`` concurrently, request i admitted ``delays[i]`` seconds after the first; their token ids."""

    async def one(r, delay):
        await asyncio.sleep(delay)
        return (await backend.generate(r)).ids

    async def all_of():
        return await asyncio.gather(*(one(r, d) for r, d in zip(requests, delays or [0.0] * len(requests))))

    return asyncio.run(all_of())


def compare(name: str, reference, other) -> dict:
    """How many outputs equal the reference, and the first differing position of each that does not."""

    def first_difference(a, b):
        at = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), None)
        return at if at is not None or len(a) == len(b) else min(len(a), len(b))

    at = [first_difference(a, b) for a, b in zip(reference, other, strict=True)]
    same = sum(d is None for d in at)
    print(f"{name}: {same}/{len(at)} identical; first differences at {[d for d in at if d is not None]}", flush=True)
    return {"identical": same, "n": len(at), "first_difference": at}


def decode_part(model: str, tokens: int) -> dict:
    out = {}
    with make_backend("vllm", model) as b:
        reqs = short_requests(b.tokenizer, 8, tokens)
        ref = generate(b, reqs)
        out["same engine, prompts cached"] = compare("same engine again (prefix cache warm)", ref, generate(b, reqs))
    with make_backend("vllm", model) as b:
        out["fresh engine"] = compare("a fresh engine, the same batch", ref, generate(b, reqs))
    with make_backend("vllm", model, enable_prefix_caching=False) as b:
        out["no prefix caching"] = compare("no prefix caching", ref, generate(b, reqs))
        out["reverse admission"] = compare("admitted in reverse order", ref, generate(b, reqs[::-1])[::-1])
        out["batch of 4"] = compare("4 of them alone", ref[:4], generate(b, reqs[:4]))
    return out


def batch_part(model: str, tokens: int) -> dict:
    with make_backend("vllm", model, enable_prefix_caching=False) as b:
        reqs = short_requests(b.tokenizer, 32, tokens)
        big = generate(b, reqs)
        eights = [ids for i in range(0, 32, 8) for ids in generate(b, reqs[i : i + 8])]
        staggered = generate(b, reqs[:8], [1.5 * (i % 4) for i in range(8)])
    return {
        "32 at once vs 4 x 8": compare("32 at once vs 8 at a time", big, eights),
        "staggered": compare("8 admitted 0-4.5 s apart vs 8 at once", eights[:8], staggered),
    }


def prefill_part(model: str, tokens: int) -> dict:
    out = {}
    with make_backend("vllm", model, enable_prefix_caching=False) as b:
        short = short_requests(b.tokenizer, 8, tokens)
        longs = [request(b.tokenizer, LONG, 7, 64), request(b.tokenizer, LONG.replace("Rewrite", "Now rewrite"), 8, 64)]
        print(f"long prompts: {len(longs[0].ids)} tokens", flush=True)
        short_alone, long_alone = generate(b, short), generate(b, longs)
        for delay in (1.0, 3.0):
            mixed = generate(b, short + longs, [0.0] * 8 + [delay, delay])
            out[f"long prompts joining decodes after {delay:g} s"] = {
                "long": compare(f"  the long prompts, joining after {delay:g} s, vs alone", long_alone, mixed[8:]),
                "short": compare("  the 8 decoding beside them vs alone", short_alone, mixed[:8]),
            }
    return out


PARTS = {"decode": decode_part, "batch": batch_part, "prefill": prefill_part}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--part", choices=sorted(PARTS), action="append", help="default: all")
    ap.add_argument("--tokens", type=int, default=96, help="tokens per short request")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    model = str(resolve_model(args.model))
    result = {"machine": machine(), "model": args.model, "tokens": args.tokens, "date": time.strftime("%Y-%m-%d")}
    for part in args.part or list(PARTS):
        print(f"[{part}]", flush=True)
        result[part] = PARTS[part](model, args.tokens)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
