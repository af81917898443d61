"""bf16 autocast against fp32 on this CPU: one Qwen2.5-0.5B-sized MLP projection, forward + backward.

Why it exists: the cpu profiles train under bf16 autocast, which a CPU with bf16 instructions (avx512_bf16,
amx_bf16) runs faster than fp32, and a CPU without them (AVX2 only) emulates, much slower. The trainers check
the flags (``thor_core.provenance.bf16_autocast``) and fall back to fp32 there; this measures the two on the
machine at hand. Warm-up first, the two orders alternated, medians over repeats, one torch thread by default.

    .venv/bin/python benchmarks/cpu_bf16.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from thor_core.provenance import fast_bf16, machine


def step(layer: torch.nn.Linear, x: torch.Tensor, bf16: bool) -> float:
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = layer(x)
    y.float().sum().backward()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
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
