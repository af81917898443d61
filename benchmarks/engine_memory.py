"""Where an RL process's memory goes, with the vLLM engine in bf16 (the checkpoint's) or fp32.

Why it exists: on CPUs without bf16 instructions vLLM generates 2.3x faster in fp32 (benchmarks/cpu_bf16.py
--vllm), but notebook 03's peak used memory rose from 16.3 to 22.2 GB of 24 with an fp32 engine. This replays
what an RL run does in one process, phase by phase, on the embedded Qwen2.5-Coder-0.5B: the policy (fp32, LoRA
on every linear layer, as the cpu profiles train), the engine (the kit's VLLMBackend, as the trainer builds it),
a batch of rollouts, the weight push into the engine (``rl.policy.engine_weights``, LoRA merged) twice, a batch
after it, the engine closed and a second one built and closed, as notebook 03's checks do after training. Each phase prints the process's resident memory at its end and its peak during the phase
(sampled every 50 ms). One fresh process per dtype, the two orders alternated over repeats.

    .venv/bin/python benchmarks/engine_memory.py --repeats 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time

import psutil

GIB = 1 << 30


class Peak:
    """The process's resident memory, sampled in a thread: the peak since the last ``mark``."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:  # a daemon thread: it ends with the process
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)

    def mark(self, phase: str, rows: list) -> None:
        rss = self.process.memory_info().rss
        rows.append({"phase": phase, "rss_gib": round(rss / GIB, 2), "peak_gib": round(max(self.peak, rss) / GIB, 2)})
        print(f"  {phase:<28} rss {rss / GIB:5.2f} GiB   peak {max(self.peak, rss) / GIB:5.2f} GiB", flush=True)
        self.peak = rss


def child(dtype: str, kv_cache_gib: float) -> None:
    from thor_core.backends.base import SamplingParams, SegmentRequest
    from thor_core.backends.vllm import VLLMBackend
    from thor_core.models import DEFAULT_MODEL, resolve_model
    from thor_core.rl.policy import engine_weights, load_policy

    rows: list = []
    peak = Peak()
    peak.mark("start (imports)", rows)
    folder = resolve_model(DEFAULT_MODEL)
    policy, tokenizer = load_policy(str(folder), method="lora")
    peak.mark("policy fp32 + LoRA", rows)
    backend = VLLMBackend(folder, dtype=dtype, kv_cache_gib=kv_cache_gib)
    peak.mark(f"engine {dtype}", rows)
    prompts = [tokenizer.encode(f"What is {i} * {i + 7} + {3 * i}? Use python.") for i in range(8)]
    sampling = SamplingParams(temperature=1.0)

    async def batch():
        requests = [SegmentRequest(p, max_new_tokens=64, sampling=sampling, seed=i) for i, p in enumerate(prompts)]
        return await asyncio.gather(*(backend.generate(r) for r in requests))

    asyncio.run(batch())
    peak.mark("8 rollouts x 64 tokens", rows)
    for i in (1, 2):
        backend.load_weights(engine_weights(policy))
        peak.mark(f"weight push {i}", rows)
    asyncio.run(batch())
    peak.mark("8 rollouts after the push", rows)
    backend.close()  # drops vLLM's reload records and trims the allocator (VLLMBackend.close)
    peak.mark("engine closed", rows)
    with VLLMBackend(folder, dtype=dtype, kv_cache_gib=kv_cache_gib):  # as notebook 03's checks do next
        peak.mark(f"a second engine {dtype}", rows)
    peak.mark("second engine closed", rows)
    print("RESULT " + json.dumps(rows), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--kv-cache-gib", type=float, default=2.0, help="the engine's KV cache (VLLMBackend's default: 2)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.kv_cache_gib)
        return
    from thor_core.hardware import machine

    print(f"machine: {machine()}", flush=True)
    results: dict[str, list] = {d: [] for d in args.dtypes}
    for r in range(args.repeats):
        order = args.dtypes if r % 2 == 0 else list(reversed(args.dtypes))
        for dtype in order:
            print(f"repeat {r + 1}, engine {dtype}:", flush=True)
            cmd = [sys.executable, __file__, "--child", dtype, "--kv-cache-gib", str(args.kv_cache_gib)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            for line in done.stdout.splitlines():
                if line.startswith("RESULT "):
                    results[dtype].append(json.loads(line[7:]))
                else:
                    print(line, flush=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], flush=True)
                raise SystemExit(f"the {dtype} child failed")
    print("\n| phase | " + " | ".join(f"{d}: end / peak GiB" for d in args.dtypes) + " |")
    print("|---|" + "---|" * len(args.dtypes))
    for i, row in enumerate(results[args.dtypes[0]][0]):
        cells = []
        for d in args.dtypes:
            runs = [rows[i] for rows in results[d]]
            cells.append(f"{max(x['rss_gib'] for x in runs):.2f} / {max(x['peak_gib'] for x in runs):.2f}")
        print(f"| {row['phase']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
