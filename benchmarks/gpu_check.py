"""The GPU check (``make gpu-check``): the CUDA tests and a miniature of a gpu profile, on one GPU in minutes.

Parts, in order (each one's failure is named and the others still run where they can):

  cuda-tests   ``pytest tests/test_cuda.py`` in a subprocess (``--device cpu``: skipped)
  evaluation   answers of the start model on the held-out problems (``--answers``, 20), with the sampling of the
               profile's 04 file when it has one (self-correction as its T6), else of 03's before/after check
  sft          one optimizer step of the profile's 02 settings, on the evaluation's own answers exported as the SFT
               format (``thor_core.data.sft_examples``: the stand-in for a TIRGen export; right or wrong, for the
               mechanics, not for learning)
  rl           two RL steps of the profile's 03 settings from SFT's model (the base model when SFT failed): its
               engine (CUDA vLLM by default), the sandbox, its update schedule (``updates_per_batch`` and all), the
               weight push into the engine after each step, checkpoints

The miniatures load the profile's YAML files and override only what makes them small or possible without a hub: the
model, the problems (generated, offline), the question and token counts (``--questions``, ``--tokens``), the step
counts (SFT 1, RL 2) and the output folders; ``--set 03_rl.group_size=4`` overrides more. ``questions`` defaults to
``ceil(updates_per_batch / group_size) + 1``, so that a round whose groups all have reward spread has a row for each
of the profile's updates. The stages run through their public entry points (``thor_core.rl.trainer.train``,
``thor_core.sft.train.train``, ``thor_core.evaluation.runner.evaluate``).

Printed: a table of the parts with tokens/s (generated tokens over the generating wall time; SFT: its step's tokens
over its wall time, the model load included), the step time, and the peak memory: ``torch.cuda.max_memory_allocated``
per part on a GPU (vLLM's engine and KV cache included: they come from torch's allocator), the process's peak RSS so
far on the CPU. Exit status 1 when a part failed, 2 for bad arguments.

    python benchmarks/gpu_check.py                          # one GPU, CUDA vLLM, the embedded default model
    python benchmarks/gpu_check.py --device cpu --backend hf --model embedded:qwen2.5-tiny-random  # the plumbing

The CPU form is tests/test_gpu_check.py. docs/BENCHMARKS.md, "GPU check", has the runs.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PARTS = ("cuda-tests", "evaluation", "sft", "rl")
BUDGET_S = 480  # what the check may take on one GPU (docs/BENCHMARKS.md, "GPU check"); the total is printed against it


@dataclass
class Part:
    name: str
    status: str = "not run"  # ok / FAILED / skipped / not run
    detail: str = ""
    tokens_per_s: float | None = None
    step_s: float | None = None
    peak_gib: float | None = None


def parse_args(argv: list[str] | None):
    from thor_core.models import DEFAULT_MODEL

    ap = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="gpu-1.5b", help="params/<profile>/ (02_sft, 03_rl; 04 when it has one)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: the plumbing, CUDA hidden")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="start model: embedded:..., or a local folder")
    ap.add_argument("--backend", choices=("vllm", "hf"), default="vllm", help="rollout engine of every part")
    ap.add_argument("--answers", type=int, default=20, help="evaluation answers (problems x the profile's k)")
    ap.add_argument(
        "--questions",
        type=int,
        default=None,
        help="RL questions per step (default: ceil(updates_per_batch / group_size) + 1)",
    )
    ap.add_argument("--tokens", type=int, default=256, help="completion budget of every rollout")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="one more override of a stage's profile (YAML value), e.g. 03_rl.group_size=4")  # fmt: skip
    ap.add_argument("--out-dir", help="run folders (default: a temporary folder, removed at the end)")
    args = ap.parse_args(argv)
    args.extra = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        stage, dot, name = key.partition(".")
        if not sep or not dot or stage not in ("02_sft", "03_rl", "04_correction_inference"):
            ap.error(f"--set {item!r}: expected STAGE.KEY=VALUE with STAGE 02_sft, 03_rl or 04_correction_inference")
        args.extra.setdefault(stage, {})[name] = yaml.safe_load(value)
    if args.answers < 1 or args.tokens < 16:
        ap.error("--answers must be >= 1 and --tokens >= 16")
    return args


# ------------------------------------------------------------------ memory


def reset_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    """Peak GPU memory torch allocated since ``reset_peak`` (cuda), or this process's peak RSS so far (cpu)."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ------------------------------------------------------------------ the parts


def cuda_tests(args, part: Part, ctx: dict) -> None:
    if args.device == "cpu":
        part.status, part.detail = "skipped", "--device cpu"
        return
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"],
                          cwd=REPO, capture_output=True, text=True)  # fmt: skip
    part.step_s = time.monotonic() - t0
    last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    if done.returncode != 0:
        print(done.stdout[-4000:] + done.stderr[-2000:], flush=True)
        raise RuntimeError(f"pytest tests/test_cuda.py exited {done.returncode}: {last}")
    part.detail = last.strip("= ")


def evaluation(args, part: Part, ctx: dict) -> None:
    from thor_core.backends import make_backend
    from thor_core.data.heldout import heldout_problems
    from thor_core.evaluation.before_after import CheckParams
    from thor_core.evaluation.rungs import RungsParams
    from thor_core.evaluation.runner import evaluate
    from thor_core.rl.config import NOTEBOOK_SCHEMAS
    from thor_core.sandbox import Sandbox, SandboxConfig

    rungs = ctx["folder"] / "04_correction_inference.yaml"
    if rungs.is_file():  # notebook 04's sampling, self-correction on where the profile has a T6
        p = split(rungs, (RungsParams,), args, {"benchmarks": ["heldout"], "max_new_tokens": args.tokens})[0]
        n = math.ceil(args.answers / p.k)
        p = replace(p, heldout_n=n)
        problems, k, cfg, sc = p.problems()["heldout"], p.k, p.rollout_config(), bool(p.self_correction_rungs)
        part.detail = f"04 sampling, k {k}" + (f", self-correction N_corr {p.max_corrections}" if sc else "")
    else:  # notebooks 02/03's before/after check
        check: CheckParams = split(ctx["folder"] / "03_rl.yaml", NOTEBOOK_SCHEMAS, args, {})[1]
        check = replace(check, eval_max_new_tokens=args.tokens)
        k, cfg, sc = check.eval_k, check.rollout_config(), False
        problems = heldout_problems(math.ceil(args.answers / k), check.heldout_seed)[0]
        part.detail = f"03 check sampling, k {k}"
    with make_backend(args.backend, args.model) as engine, Sandbox(SandboxConfig()) as sandbox:
        t0 = time.monotonic()
        result = evaluate(engine, sandbox, ["heldout"], k, "tir", sc, cfg, ctx["out"] / "eval",
                          problems={"heldout": problems}, progress=False)  # fmt: skip
        wall = time.monotonic() - t0
    records = result.records
    part.tokens_per_s = sum(r.n_policy_tokens for r in records) / wall
    part.step_s = wall
    part.detail += f"; {len(records)} answers, {sum(bool(r.correct) for r in records)} right"
    ctx["records"] = records


def sft(args, part: Part, ctx: dict) -> None:
    from transformers import AutoTokenizer

    from thor_core.data.sft_examples import save_sft_dataset
    from thor_core.evaluation.before_after import CheckParams
    from thor_core.models import resolve_model
    from thor_core.sft.config import SFTNotebook, SFTParams
    from thor_core.sft.train import train

    if not ctx.get("records"):
        raise RuntimeError("no evaluation answers to train on (the evaluation part failed)")
    data = ctx["out"] / "sft-data"
    save_sft_dataset(ctx["records"], AutoTokenizer.from_pretrained(resolve_model(args.model)), data)
    p: SFTParams = split(ctx["folder"] / "02_sft.yaml", (SFTParams, CheckParams, SFTNotebook), args, {
        "model": args.model, "dataset": str(data), "output_dir": str(ctx["out"] / "sft"), "max_steps": 1,
        "save_steps": 1, "progress": "lines", "overwrite": True})[0]  # fmt: skip
    batch = p.per_device_batch_size  # one micro-batch: the profile's per-device size, no accumulation
    p = replace(p, global_batch_size=batch, limit=batch)
    summary = train(p)
    part.step_s = summary["wall_s"]
    part.tokens_per_s = summary["tokens"] / summary["wall_s"]
    part.detail = f"{summary['steps']} step of {summary['dataset_size']} examples, loss {summary['final_loss']:.3f}"
    ctx["sft_final"] = summary["final_dir"]


def rl(args, part: Part, ctx: dict) -> None:
    from thor_core.rl.config import NOTEBOOK_SCHEMAS
    from thor_core.rl.trainer import train

    start = ctx.get("sft_final") or args.model
    p = split(ctx["folder"] / "03_rl.yaml", NOTEBOOK_SCHEMAS, args, {})[0]
    questions = args.questions or math.ceil(p.updates_per_batch / p.group_size) + 1
    p = split(ctx["folder"] / "03_rl.yaml", NOTEBOOK_SCHEMAS, args, {
        "model": start, "output_dir": str(ctx["out"] / "rl"), "problems": "generated", "n_problems": 64,
        "steps": 2, "questions_per_step": questions, "max_new_tokens": args.tokens,
        "step_max_new_tokens": min(p.step_max_new_tokens, args.tokens), "backend": args.backend,
        "overwrite": True, "progress": "lines"})[0]  # fmt: skip
    summary = train(p, progress=False)
    last = summary["last"]
    part.tokens_per_s, part.step_s = last["tokens_per_s"], last["time/step_s"]
    updates = sum(row.get("optimizer_steps", 0) for row in (summary["first"], last) if "skipped_update" not in row)
    part.detail = (f"from {'SFT' if ctx.get('sft_final') else 'the base model'}; {questions} questions x G "
                   f"{p.group_size}, {p.updates_per_batch} updates per round; {int(updates)} optimizer steps, "
                   f"weight push {last['time/sync_s']:.1f} s, clip_frac {last.get('clip_frac', float('nan')):.3f}")  # fmt: skip


def split(path: Path, schemas: tuple, args, overrides: dict) -> tuple:
    """A stage's profile file with the check's overrides and the user's ``--set`` on top, split and validated."""
    from thor_core.params import read_yaml_mapping, split_params

    values = read_yaml_mapping(path)
    values.update(overrides)
    values.update(args.extra.get(path.stem, {}))
    return split_params(schemas, values, str(path))


# ------------------------------------------------------------------ the run


def table(parts: list[Part], device: str) -> str:
    memory = "peak GPU memory (GiB)" if device == "cuda" else "peak RSS so far (GiB)"
    rows = [f"| part | status | tokens/s | step time (s) | {memory} | detail |", "|---|---|---|---|---|---|"]
    for p in parts:
        cells = [f"{x:.1f}" if x is not None else "-" for x in (p.tokens_per_s, p.step_s, p.peak_gib)]
        rows.append(f"| {p.name} | {p.status} | {' | '.join(cells)} | {p.detail} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: the plumbing on the CPU of any machine
    os.environ.setdefault("THOR_PROGRESS", "lines")
    import torch

    from thor_core.hardware import machine

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "error: --device cuda, but torch sees no CUDA device (use --device cpu for the plumbing)", file=sys.stderr
        )
        return 2
    folder = REPO / "params" / args.profile
    if not (folder / "02_sft.yaml").is_file() or not (folder / "03_rl.yaml").is_file():
        print(f"error: {folder} needs 02_sft.yaml and 03_rl.yaml", file=sys.stderr)
        return 2
    info = machine()
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "none (--device cpu)"
    print(f"gpu check: profile {args.profile}, model {args.model}, backend {args.backend}, GPU {gpu}, "
          f"{info['cpus']} CPUs, torch {torch.__version__}", flush=True)  # fmt: skip
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="thor-gpu-check-") as tmp:
        ctx = {"folder": folder, "out": Path(args.out_dir).resolve() if args.out_dir else Path(tmp)}
        parts = []
        for name, run in zip(PARTS, (cuda_tests, evaluation, sft, rl)):
            part = Part(name)
            parts.append(part)
            print(f"== {name}", flush=True)
            reset_peak(args.device)
            try:
                run(args, part, ctx)
                part.status = part.status if part.status == "skipped" else "ok"
            except Exception as e:
                traceback.print_exc()
                part.status, part.detail = "FAILED", " ".join(f"{type(e).__name__}: {e}".split())[:400]
            if name != "cuda-tests":  # the tests' subprocess is not this process's memory
                part.peak_gib = peak_gib(args.device)
    wall = time.monotonic() - t_start
    over = (
        f" (over the {BUDGET_S // 60}-minute budget: cut --answers, --questions or --tokens)" if wall > BUDGET_S else ""
    )
    print(f"\n{table(parts, args.device)}\n\ntotal wall time {wall:.0f} s{over}", flush=True)
    failed = [p.name for p in parts if p.status == "FAILED"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":  # spawned grading workers re-import this module (thor_core/grading.py)
    sys.exit(main())
