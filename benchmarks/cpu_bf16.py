"""bf16 against fp32 on this CPU: training (a Qwen2.5-0.5B-sized MLP projection, forward + backward under
autocast) or, with ``--vllm``, generation by the vLLM engine (the embedded Qwen2.5-Coder-0.5B).

Why it exists: the cpu profiles train under bf16 autocast and vLLM's dtype "auto" keeps the checkpoint's bf16,
which a CPU with bf16 instructions (avx512_bf16, amx_bf16) runs fast and a CPU without them emulates, much
slower. The trainers check the flags (``thor_core.runs.provenance.bf16_autocast``) and use fp32 there; the vLLM
backend keeps "auto" (fp32 engines cost far more memory, docs/BENCHMARKS.md) and takes ``dtype="float32"``
when asked. This measures the two on the machine at hand. Warm-up first, the two orders alternated, medians
over repeats; one torch thread by default for training, the machine's threads for vLLM (one fresh engine per
dtype and repeat, 8 prompts x 128 tokens).

    .venv/bin/python benchmarks/cpu_bf16.py --repeats 5
    .venv/bin/python benchmarks/cpu_bf16.py --vllm --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from thor_core.hardware import fast_bf16, machine


def step(layer: torch.nn.Linear, x: torch.Tensor, bf16: bool) -> float:
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = layer(x)
    y.float().sum().backward()
    return time.perf_counter() - t0


def vllm_child(dtype: str) -> None:
    """One engine in ``dtype``: prints its start-up seconds and one timed batch's sampled tokens per second."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    t0 = time.perf_counter()
    from vllm import LLM, SamplingParams

    from thor_core.models import DEFAULT_MODEL, resolve_model

    llm = LLM(
        model=str(resolve_model(DEFAULT_MODEL)), dtype=dtype, max_model_len=1024, kv_cache_memory_bytes=1 << 30,
        enforce_eager=True, seed=0, disable_log_stats=True,
    )  # fmt: skip
    startup = time.perf_counter() - t0
    prompts = [f"What is {i} * {i + 7} + {3 * i}? Use python." for i in range(8)]
    sampling = SamplingParams(temperature=1.0, max_tokens=128, ignore_eos=True, seed=0, logprobs=0)
    llm.generate(prompts[:2], sampling, use_tqdm=False)  # warm-up
    t1 = time.perf_counter()
    out = llm.generate(prompts, sampling, use_tqdm=False)
    tokens = sum(len(o.outputs[0].token_ids) for o in out)
    print(f"RESULT {startup:.2f} {tokens / (time.perf_counter() - t1):.2f}", flush=True)


def vllm_main(repeats: int) -> None:
    results: dict[str, list[tuple[float, float]]] = {"float32": [], "bfloat16": []}
    for rep in range(repeats):
        for dtype in ("float32", "bfloat16") if rep % 2 == 0 else ("bfloat16", "float32"):
            done = subprocess.run(
                [sys.executable, __file__, "--vllm-child", dtype], capture_output=True, text=True, check=True
            )
            line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
            results[dtype].append(tuple(float(v) for v in line.split()[1:]))
            print(f"  repeat {rep + 1} {dtype}: start-up {results[dtype][-1][0]:.1f} s, "
                  f"{results[dtype][-1][1]:.1f} tok/s", flush=True)  # fmt: skip
    info = machine()
    print(f"{info.get('cpu_model')}, flags {info.get('cpu_flags')}, {os.cpu_count()} CPUs, "
          f"fast bf16 by the kit's rule: {fast_bf16('cpu')}")  # fmt: skip
    print(f"vLLM, 8 prompts x 128 sampled tokens, median of {repeats}:")
    for dtype, xs in results.items():
        tps = [x[1] for x in xs]
        print(f"  {dtype}: {statistics.median(tps):.1f} tok/s [{min(tps):.1f}-{max(tps):.1f}], "
              f"start-up {statistics.median(x[0] for x in xs):.1f} s")  # fmt: skip
    ratio = statistics.median(x[1] for x in results["float32"]) / statistics.median(x[1] for x in results["bfloat16"])
    print(f"  float32 / bfloat16 tok/s: {ratio:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vllm", action="store_true", help="measure vLLM generation instead of training")
    ap.add_argument("--vllm-child", choices=("float32", "bfloat16"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.vllm_child:
        return vllm_child(a.vllm_child)
    if a.vllm:
        return vllm_main(a.repeats)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(896, 4864), torch.randn(a.tokens, 896, requires_grad=True)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    step(layer, x, False), step(layer, x, True)  # warm-up
    for rep in range(a.repeats):
        for name in ("fp32", "bf16") if rep % 2 == 0 else ("bf16", "fp32"):
            times[name].append(step(layer, x, name == "bf16"))
    info = machine()
    print(f"{info.get('cpu_model')}, flags {info.get('cpu_flags')}, torch {torch.__version__}, {a.threads} thread(s), "
          f"fast bf16 by the kit's rule: {fast_bf16('cpu')}")  # fmt: skip
    print(f"{a.tokens} x 896 -> 4864, forward + backward, median of {a.repeats}:")
    for name, xs in times.items():
        print(f"  {name}: {statistics.median(xs):.3f} s  [{min(xs):.3f}-{max(xs):.3f}]")
    print(f"  bf16 / fp32: {statistics.median(times['bf16']) / statistics.median(times['fp32']):.2f}x")


if __name__ == "__main__":
    main()
