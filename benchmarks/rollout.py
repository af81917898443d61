"""Rollout throughput: our engine against the usual tool-loop patterns, on one batch.

Workload: ``--n`` generated problems where exact computation matters
(``thor_core.problems``), the TIR prompt, the embedded Qwen 0.5B model, greedy,
``--max-new-tokens`` per trajectory, at most ``--rounds`` tool calls.

Rows (all in one run, same problems, same budget):
  ours / vllm       thor_core.rollout over the vLLM backend (continuous batching)
  plain / vllm      (a) vllm.LLM.generate of the same prompts, no tools, same budget
  round-sync / vllm (b) one LLM.generate per tool round over every live trajectory
  ours / hf         thor_core.rollout over the hf backend (KV cache kept across calls)
  tora / hf         (c) ToRA-style: model.generate afresh on the whole text after each call

Generated tokens/s counts sampled tokens only (inserted outputs excluded).
Targets: ours/vllm >= 0.9x plain, >= 1.5x round-sync; ours/hf >= 2x tora.

    .venv/bin/python benchmarks/rollout.py            # the full table (~10 min on 2 cores)
    .venv/bin/python benchmarks/rollout.py --n 4 --max-new-tokens 96 --skip-hf   # a quick look
"""

from __future__ import annotations

import argparse
import os
import time

from thor_core import tir
from thor_core.backends import GREEDY
from thor_core.models import DEFAULT_MODEL, resolve_model
from thor_core.problems import generate_problems
from thor_core.rollout import RolloutConfig, make_tasks, run_rollouts
from thor_core.sandbox import Sandbox, SandboxConfig


def _ours(backend, sandbox, tasks, cfg) -> dict:
    start = time.perf_counter()
    records = run_rollouts(backend, sandbox, tasks, cfg, progress=False)
    wall = time.perf_counter() - start
    return {
        "tokens": sum(r.n_policy_tokens for r in records),
        "wall": wall,
        "sandbox": sum(c.duration_s for r in records for c in r.tool_calls),
        "calls": sum(r.n_calls for r in records),
    }


def _run_code(sandbox, code: str) -> tuple[str, float]:
    result = sandbox.run(code)
    return result.observation, result.duration_s


def _insert(tokenizer, ids: list[int], observation: str) -> list[int]:
    text = tokenizer.decode(ids)
    return ids + tokenizer.encode(
        tir.output_block_prefix(text) + tir.render_output_block(observation), add_special_tokens=False
    )


def _plain_vllm(llm, tasks, max_new_tokens) -> dict:
    import vllm

    params = vllm.SamplingParams(max_tokens=max_new_tokens, temperature=0)
    start = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": t.prompt_ids} for t in tasks], params, use_tqdm=False)
    wall = time.perf_counter() - start
    return {"tokens": sum(len(o.outputs[0].token_ids) for o in outs), "wall": wall, "sandbox": 0.0, "calls": 0}


def _round_sync_vllm(llm, sandbox, tasks, max_new_tokens, rounds) -> dict:
    """Baseline (b): every round waits for the slowest trajectory of the batch."""
    import vllm

    tokenizer = llm.get_tokenizer()
    live = {i: [] for i in range(len(tasks))}  # task index -> completion ids
    tokens = calls = 0
    sandbox_s = 0.0
    start = time.perf_counter()
    for _ in range(rounds + 1):
        if not live:
            break
        order = list(live)
        prompts = [{"prompt_token_ids": tasks[i].prompt_ids + live[i]} for i in order]
        params = [
            vllm.SamplingParams(
                max_tokens=max(1, max_new_tokens - len(live[i])),
                temperature=0,
                stop=["```\n"],
                include_stop_str_in_output=True,
            )
            for i in order
        ]
        outs = llm.generate(prompts, params, use_tqdm=False)
        for i, out in zip(order, outs):
            new = list(out.outputs[0].token_ids)
            tokens += len(new)
            live[i] += new
            code = tir.pending_code(tokenizer.decode(live[i]))
            if code is None or out.outputs[0].finish_reason == "length" or len(live[i]) >= max_new_tokens:
                del live[i]
                continue
            observation, seconds = _run_code(sandbox, code)
            sandbox_s += seconds
            calls += 1
            live[i] = _insert(tokenizer, live[i], observation)
    return {"tokens": tokens, "wall": time.perf_counter() - start, "sandbox": sandbox_s, "calls": calls}


def _tora_hf(model, tokenizer, sandbox, tasks, max_new_tokens, rounds, batch) -> dict:
    """Baseline (c): re-encode and re-generate the whole text after every tool call."""
    import torch

    tokenizer.padding_side = "left"
    texts = {i: tokenizer.decode(t.prompt_ids) for i, t in enumerate(tasks)}
    generated = {i: 0 for i in texts}
    live = list(texts)
    tokens = calls = 0
    sandbox_s = 0.0
    start = time.perf_counter()
    for _ in range(rounds + 1):
        if not live:
            break
        next_live = []
        for chunk_start in range(0, len(live), batch):
            chunk = live[chunk_start : chunk_start + batch]
            enc = tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            budget = max(1, max(max_new_tokens - generated[i] for i in chunk))
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=budget,
                    do_sample=False,
                    stop_strings=["```\n"],
                    tokenizer=tokenizer,
                    pad_token_id=tokenizer.pad_token_id,
                )
            for row, i in enumerate(chunk):
                new = [t for t in out[row, enc["input_ids"].shape[1] :].tolist() if t != tokenizer.pad_token_id]
                tokens += len(new)
                generated[i] += len(new)
                texts[i] += tokenizer.decode(new)
                code = tir.pending_code(texts[i])
                if code is None or generated[i] >= max_new_tokens:
                    continue
                observation, seconds = _run_code(sandbox, code)
                sandbox_s += seconds
                calls += 1
                texts[i] += tir.output_block_prefix(texts[i]) + tir.render_output_block(observation)
                next_live.append(i)
        live = next_live
    return {"tokens": tokens, "wall": time.perf_counter() - start, "sandbox": sandbox_s, "calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16, help="problems in the batch")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=3, help="max tool rounds")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-vllm", action="store_true")
    args = parser.parse_args()

    problems = generate_problems(args.n, seed=7, levels=(2,))
    cfg = RolloutConfig(
        max_new_tokens=args.max_new_tokens, max_tool_rounds=args.rounds, sampling=GREEDY, stop_after_answer=False
    )
    rows: list[tuple[str, dict]] = []
    with Sandbox(SandboxConfig()) as sandbox:
        sandbox.health_check()
        if not args.skip_vllm:
            import vllm

            from thor_core.backends.vllm import VLLMBackend

            with VLLMBackend.from_model_name(args.model) as backend:
                tasks = make_tasks(problems, backend.tokenizer)
                rows.append(("ours / vllm", _ours(backend, sandbox, tasks, cfg)))
            llm = vllm.LLM(
                model=str(resolve_model(args.model)),
                max_model_len=4096,
                kv_cache_memory_bytes=2 << 30,
                enforce_eager=True,
                seed=0,
            )
            rows.append(("plain / vllm (a)", _plain_vllm(llm, tasks, args.max_new_tokens)))
            rows.append(
                ("round-sync / vllm (b)", _round_sync_vllm(llm, sandbox, tasks, args.max_new_tokens, args.rounds))
            )
            del llm
        if not args.skip_hf:
            from thor_core.backends.hf import HFBackend

            with HFBackend.from_model_name(args.model, max_batch=args.n) as backend:
                tasks = make_tasks(problems, backend.tokenizer)
                rows.append(("ours / hf", _ours(backend, sandbox, tasks, cfg)))
                rows.append(
                    (
                        "tora / hf (c)",
                        _tora_hf(
                            backend.model, backend.tokenizer, sandbox, tasks, args.max_new_tokens, args.rounds, args.n
                        ),
                    )
                )

    rate = {name: r["tokens"] / r["wall"] for name, r in rows}
    print(
        f"\n{args.n} problems, max_new_tokens={args.max_new_tokens}, rounds<={args.rounds}, model={args.model}, cores={os.cpu_count()}"
    )
    print(f"| {'run':<22} | tokens | calls | wall s | sandbox s | tok/s |")
    print(f"|{'-' * 24}|-------:|------:|-------:|----------:|------:|")
    for name, r in rows:
        print(
            f"| {name:<22} | {r['tokens']:6d} | {r['calls']:5d} | {r['wall']:6.1f} | {r['sandbox']:9.2f} | {rate[name]:5.1f} |"
        )
    ratios = [
        ("ours/vllm vs plain (a), target >= 0.9", "ours / vllm", "plain / vllm (a)"),
        ("ours/vllm vs round-sync (b), target >= 1.5", "ours / vllm", "round-sync / vllm (b)"),
        ("ours/hf vs tora (c), target >= 2", "ours / hf", "tora / hf (c)"),
        ("ours/hf vs ours/vllm (record)", "ours / hf", "ours / vllm"),
    ]
    for label, a, b in ratios:
        if a in rate and b in rate:
            print(f"{label}: {rate[a] / rate[b]:.2f}x")


if __name__ == "__main__":
    main()
