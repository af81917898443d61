"""Time per RL step, split into phases: our trainer (cot / episode / thor) against TRL's GRPOTrainer.

Rows (``--rows``; ``-vllm`` rows use our vLLM backend, the others the hf backend):
  trl       trl.GRPOTrainer: transformers generate, no tools, loss_type "dapo", eps 0.2 / 0.28, beta 0,
            one update per generation batch, use_vllm False
  cot       ours, mode cot (no tools): the like-for-like row against trl (both generate with
            transformers on the CPU, no tools)
  episode   ours, mode episode (tools on, sandbox): episode-level GRPO
  thor      ours, mode thor: episode + step level (G continuations of cut prefixes at failed calls)
  cot-vllm, episode-vllm, thor-vllm   the same on the vLLM backend (optional; not yet run)

Same for every row: model, the same generated problems in the same order (the trainer's seeded order;
TRL with shuffle_dataset False), Q questions x G samples per step, max completion length, temperature
1.0, learning rate 1e-6, grad clip 1.0, every row of the batch in one forward/backward (TRL's
per_device_train_batch_size = Q x G; ours micro_batch_rows = Q x G), fp32. Ours without refill
rounds, dual clip or NLL term (TRL has none of them).

Reward (``--reward``): ``alternate`` (default) runs the real grader on every completion (its cost is
timed) but rewards every second completion, so every group has spread and every row is trained on
both sides (with the real reward a 135M model solves ~nothing: ours drops groups without spread and
skips the update while TRL trains on zero advantages, which is no comparison). ``grade``: the real
reward. Step-level rewards in thor mode are always the real ones (did the code block run).

Phases. Ours (Trainer.step: collect / update / push_weights, as Trainer.train runs it without its
checkpoints): rollout = episode rollouts + grading + rows; step-level = thor's prefix continuations;
update = forward/backward + optimizer step; sync = weights pushed into the engine; total = the step.
TRL does not split its step: we time each step with a TrainerCallback (on_step_begin -> on_step_end,
optimizer step included) and wrap ``_generate_and_score_completions`` (generation, rewards,
advantages) on the instance; update = total - that.

Fairness: every run is a fresh trainer whose first ``--warmup`` steps are untimed; the rows run in
alternating order (forward, backward, ...) ``--repeats`` times; the table gives medians over repeats
(each repeat: the mean of its timed steps) with the spread (min-max), the load average before each
repeat and with the table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl_step.py --rows trl cot episode thor \
        --questions 2 --group-size 4 --max-new-tokens 64 --warmup 1 --steps 1 --repeats 3
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import argparse
import gc
import random
import statistics
import time
from types import SimpleNamespace

ROWS = ("trl", "cot", "episode", "thor", "cot-vllm", "episode-vllm", "thor-vllm")
PHASES = ("rollout", "step_level", "update", "sync", "total")
TARGETS = (("thor", "episode", 1.3), ("cot", "trl", 1.0))


class BenchGrader:
    """The kit's grader; with ``alternate`` the reward is 1 on every second completion (groups always spread)."""

    def __init__(self, grader, alternate: bool) -> None:
        self.grader, self.alternate, self.n = grader, alternate, 0

    def grade_completion(self, gold, text):
        correct = self.grader.grade_completion(gold, text).correct
        self.n += 1
        return SimpleNamespace(correct=bool(self.n % 2) if self.alternate else correct)


def params(a, mode: str, backend: str):
    from thor_core.rl.config import RLParams

    return RLParams(
        model=a.model, mode=mode, backend=backend, output_dir=f"/tmp/rl_step_bench/{mode}-{backend}",
        problems="generated", n_problems=a.n_problems, steps=a.warmup + a.steps, questions_per_step=a.questions,
        group_size=a.group_size, max_new_tokens=a.max_new_tokens, step_max_new_tokens=a.step_max_new_tokens,
        suffix_tokens=a.suffix_tokens, max_refill_rounds=0, dual_clip=None, nll_alpha=0.0, kl_beta=0.0,
        micro_batch_rows=a.questions * a.group_size, learning_rate=1e-6, max_grad_norm=1.0, temperature=1.0,
        overwrite=True, samples_every=0, progress="lines",
    )  # fmt: skip


def run_ours(a, row: str) -> list[dict[str, float]]:
    """Per timed step: seconds per phase, rows trained, sampled tokens per rollout."""
    from contextlib import ExitStack

    from thor_core.backends import make_backend
    from thor_core.grading import Grader
    from thor_core.rl import run as rr
    from thor_core.rl.trainer import Trainer

    mode, _, backend_kind = row.partition("-")
    p = params(a, mode, backend_kind or "hf")
    tr = Trainer(p, progress=False)
    tr.lines = False  # no per-rollout lines
    steps = []
    with ExitStack() as stack:
        backend = stack.enter_context(make_backend(p.backend, tr.model_path, **rr.backend_options(p)))
        sandbox = None
        if p.tools:
            from thor_core.sandbox import Sandbox, SandboxConfig

            sandbox = stack.enter_context(Sandbox(SandboxConfig()))
            sandbox.health_check()
        grader = BenchGrader(stack.enter_context(Grader()), a.reward == "alternate")
        for step in range(p.steps):  # Trainer.train's steps, without checkpoints and logs
            m, _ = tr.step(backend, sandbox, grader)
            if step >= a.warmup:
                steps.append({
                    "rollout": m["time/rollout_s"], "step_level": m["time/step_rollout_s"],
                    "update": m.get("time/update_s", 0.0), "sync": m["time/sync_s"], "total": m["time/step_s"],
                    "rows": m["rows"], "tokens": m["response_tokens"], "calls": m["calls_per_rollout"],
                    "step_rollouts": m["step_rollouts"],
                })  # fmt: skip
    del tr, backend
    return steps


def trl_dataset(a):
    """The questions our trainer takes, in its order (Trainer._questions), as TRL prompts."""
    from datasets import Dataset

    from thor_core import tir
    from thor_core.engine.rollout import mix_seed
    from thor_core.rl import run as rr

    p = params(a, "cot", "hf")
    problems, n = rr.training_problems(p), (a.warmup + a.steps) * a.questions
    rows = []
    for i in range(n):
        order = list(range(len(problems)))
        random.Random(mix_seed(p.seed, "epoch", i // len(problems))).shuffle(order)
        q = problems[order[i % len(problems)]]
        rows.append({"prompt": tir.build_messages(q.question, "cot"), "answer": q.answer})
    return Dataset.from_list(rows)


def run_trl(a) -> list[dict[str, float]]:
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from thor_core.grading import Grader
    from thor_core.models import load_model_and_tokenizer
    from thor_core.rl.run import resolve_start_model

    model, tok = load_model_and_tokenizer(resolve_start_model(a.model), dtype="float32")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.train()
    cfg = GRPOConfig(
        output_dir="/tmp/rl_step_bench/trl", per_device_train_batch_size=a.questions * a.group_size,
        num_generations=a.group_size, max_completion_length=a.max_new_tokens, temperature=1.0, top_p=1.0,
        loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0, num_iterations=1, use_vllm=False,
        report_to="none", max_steps=a.warmup + a.steps, logging_steps=1, save_strategy="no", learning_rate=1e-6,
        lr_scheduler_type="constant", max_grad_norm=1.0, gradient_checkpointing=False, bf16=False,
        shuffle_dataset=False, seed=0, disable_tqdm=True, use_cpu=True,
    )  # fmt: skip
    times: list[dict[str, float]] = []
    gen = {"s": 0.0}

    with Grader() as real:
        grader = BenchGrader(real, a.reward == "alternate")

        def reward(prompts, completions, answer, **_):
            return [float(grader.grade_completion(g, c[0]["content"]).correct) for g, c in zip(answer, completions)]

        class StepTimer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                gen["s"], self.t0 = 0.0, time.monotonic()

            def on_step_end(self, args, state, control, **kw):
                times.append({"total": time.monotonic() - self.t0, "rollout": gen["s"]})

        trainer = GRPOTrainer(
            model=model, reward_funcs=reward, args=cfg, train_dataset=trl_dataset(a), processing_class=tok,
            callbacks=[StepTimer()],
        )  # fmt: skip
        inner = trainer._generate_and_score_completions

        def timed(batch):
            t0 = time.monotonic()
            out = inner(batch)
            lengths.append(float(out["completion_mask"].sum(1).float().mean()))
            gen["s"] += time.monotonic() - t0
            return out

        lengths: list[float] = []
        trainer._generate_and_score_completions = timed
        trainer.train()
    del trainer, model
    out = []
    for t, n in list(zip(times, lengths))[a.warmup :]:
        out.append({**t, "step_level": 0.0, "sync": 0.0, "update": t["total"] - t["rollout"]})
        out[-1].update(rows=a.questions * a.group_size, tokens=n, calls=0.0, step_rollouts=0)
    return out


def fmt(xs: list[float]) -> str:
    if not xs or all(x == 0 for x in xs):
        return "-"
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct", help="or embedded:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--rows", nargs="+", default=["trl", "cot", "episode", "thor"], choices=ROWS)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--questions", type=int, default=2, help="Q: questions per step")
    ap.add_argument("--group-size", type=int, default=4, help="G: samples per question (and per step-level prefix)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--step-max-new-tokens", type=int, help="thor's continuation budget (default: max(64, 16%%))")
    ap.add_argument("--suffix-tokens", type=int, help="thor's L_suf (default: max(16, 3%% of max-new-tokens))")
    ap.add_argument("--n-problems", type=int, default=64)
    ap.add_argument("--reward", choices=("alternate", "grade"), default="alternate")
    a = ap.parse_args()
    # the paper's proportions (3200-token episodes, 512-token continuations, L_suf 100), floored so a block fits
    a.step_max_new_tokens = a.step_max_new_tokens or max(64, a.max_new_tokens * 512 // 3200)
    a.suffix_tokens = a.suffix_tokens or max(16, a.max_new_tokens * 100 // 3200)
    import torch

    print(f"{a.model}, Q={a.questions} x G={a.group_size}, {a.max_new_tokens} tokens, warm-up {a.warmup} + "
          f"{a.steps} timed steps x {a.repeats} repeats, reward {a.reward}, torch threads {torch.get_num_threads()}, "
          f"thor: {a.step_max_new_tokens}-token continuations, L_suf {a.suffix_tokens}", flush=True)  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {r: [] for r in a.rows}
    loads = []
    for rep in range(a.repeats):
        loads.append(os.getloadavg()[0])
        for row in a.rows if rep % 2 == 0 else a.rows[::-1]:
            t0 = time.monotonic()
            steps = run_trl(a) if row == "trl" else run_ours(a, row)
            gc.collect()
            per = {k: statistics.mean(s[k] for s in steps) for k in steps[0]}
            results[row].append(per)
            print(f"repeat {rep + 1}/{a.repeats} {row:>12}: {per['total']:.2f} s/step ({time.monotonic() - t0:.0f} s "
                  f"with set-up), load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip

    print(f"\nload average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} now; before each repeat: "
          f"{', '.join(f'{x:.2f}' for x in loads)} ({os.cpu_count()} CPUs)")  # fmt: skip
    print("\ns per step, median [min-max] over repeats\n")
    print("| row | " + " | ".join(PHASES) + " | rows trained | tokens/rollout | calls/rollout | step-level rollouts |")
    print("|---" * (len(PHASES) + 5) + "|")
    for row, reps in results.items():
        cells = [fmt([r[k] for r in reps]) for k in PHASES]
        extra = [
            f"{round(statistics.median(r[k] for r in reps), 2):g}" for k in ("rows", "tokens", "calls", "step_rollouts")
        ]
        print(f"| {row} | " + " | ".join(cells + extra) + " |")
    print("\n| ratio (total s/step) | median | per repeat | target |\n|---|---|---|---|")
    pairs = [*TARGETS, ("episode", "trl", None), ("cot-vllm", "trl", None), ("episode-vllm", "cot-vllm", None)]
    for num, den, target in pairs:
        if num in results and den in results:
            per = [x["total"] / y["total"] for x, y in zip(results[num], results[den])]
            ratio = statistics.median(x["total"] for x in results[num]) / statistics.median(
                x["total"] for x in results[den]
            )
            verdict = "" if target is None else f"<= {target}x: {'met' if ratio <= target else 'NOT met'}"
            print(f"| {num} / {den} | {ratio:.2f}x | {', '.join(f'{x:.2f}' for x in per)} | {verdict} |")


if __name__ == "__main__":
    main()
