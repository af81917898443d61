"""The folder of one RL run: checkpoints and resuming, metrics, samples, the final model.

Layout of ``<out>/``: ``rl_params.json`` (the settings it was started with;
a resumed run must match, ``RESUME_FREE`` aside), ``problems.jsonl`` (the training problems, which
held-out sets avoid), ``decontamination.json`` (what the check against the evaluation sets removed:
``thor_core.data.decontam``), ``checkpoints/step-N/``
(``accelerate`` state: model, optimizer, scheduler, RNG per rank; then
``trainer_state.json``, written last, so a folder without it is torn and
ignored), ``metrics.jsonl`` (one line per step; lines of steps a kill undid
are dropped on resume), ``samples/step-N.jsonl`` (the step's rollouts and
step-level continuations with rewards; the rows the update trained carry its per-token audit: advantage,
``trainer_logprobs``, ``entropy``; the others why they were dropped: ``thor_core.rl.batch``), ``final/`` (HF model + tokenizer,
LoRA merged) and ``rl_summary.json`` (written once, when done).

Also here: the start model (SFT's checkpoint by default), the training
problems, the per-step metrics of a batch, and their reduction across ranks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from thor_core.data.decontam import report_line, write_report
from thor_core.data.heldout import training_set, write_problems
from thor_core.files import check_settings, read_jsonl_rows, repo_path, write_json_atomic
from thor_core.models import resolve_model
from thor_core.record import write_jsonl
from thor_core.tracking import Tracker

PARAMS_FILE = "rl_params.json"
SUMMARY = "rl_summary.json"
METRICS = "metrics.jsonl"
STATE = "trainer_state.json"
# sandbox_urls: other hosts may run the code of a resumed run
RESUME_FREE = ("overwrite", "progress", "save_steps", "save_total_limit", "output_dir", "report_to", "steps", "sandbox_urls")  # fmt: skip


# ------------------------------------------------------------------ inputs


def resolve_start_model(name: str) -> str:
    """A local folder (relative to the repo) or a name ``thor_core.models`` resolves; missing: a clear error."""
    local = repo_path(name)
    if local.exists():
        if not (local / "config.json").exists():
            raise FileNotFoundError(f"start model {local} has no config.json: is it a finished SFT run's final/?")
        return str(local)
    if "/" in name and not name.startswith("embedded:") and (name.startswith(("outputs", ".", "/"))):
        raise FileNotFoundError(
            f"start model {name} does not exist: run notebook 02 (SFT) first, or set model to embedded:... "
            "(notebook 03 falls back to the embedded model and says so)"
        )
    return str(resolve_model(name))


def training_problems(p) -> list:
    """The RL questions (``decontaminated_problems`` without its report)."""
    return decontaminated_problems(p)[0]


def decontaminated_problems(p) -> tuple[list, dict]:
    """The RL questions and the decontamination report: generated, a benchmark, a file or a mix
    (``thor_core.data.heldout.training_set``, which removes what an evaluation set contaminates), short prompts only."""
    problems, decontamination = training_set(p.problems, p.n_problems, p.problem_seed, p.levels)
    kept = [q for q in problems if len(q.question) <= 4 * p.max_prompt_tokens]  # ~4 characters per token
    if not kept:
        raise ValueError(f"no training problem is shorter than max_prompt_tokens={p.max_prompt_tokens}")
    return kept, decontamination


def backend_options(p) -> dict[str, Any]:
    if p.backend == "hf":
        return {"max_batch": max(16, p.group_size * 2)}
    return {}


# ------------------------------------------------------------------ folder and resume


def _settings(p) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in dataclasses.asdict(p).items() if k not in RESUME_FREE}))


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = out / "checkpoints"
    found = (
        [d for d in folder.glob("step-*") if (d / STATE).exists() and d.name[5:].isdigit()] if folder.exists() else []
    )
    return sorted(found, key=lambda d: int(d.name[5:]))


def is_finished(out: Path) -> bool:
    return (out / SUMMARY).exists() and (out / "final" / "config.json").exists()


def read_summary(out: Path) -> dict[str, Any]:
    return json.loads((out / SUMMARY).read_text())


def prepare_folder(trainer, p) -> bool:
    """Create, check or clear ``<out>``; load the last checkpoint into ``trainer``. True when resumed."""
    out, acc = trainer.out, trainer.acc
    if acc.is_main_process:
        if p.overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        for torn in (out / "checkpoints").glob("*.tmp") if (out / "checkpoints").exists() else []:
            shutil.rmtree(torn, ignore_errors=True)
        check_settings(
            out / PARAMS_FILE, _settings(p), "an RL run", "pass overwrite=True to start over, or use another output_dir"
        )
        write_problems(trainer.problems, out)  # for held-out sets that must avoid them (thor_core.data.heldout)
        write_report(trainer.decontamination, out)
        print(report_line(trainer.decontamination))
    acc.wait_for_everyone()
    if is_finished(out) and json.loads((out / SUMMARY).read_text()).get("steps") == p.steps:
        return False
    acc.wait_for_everyone()
    if acc.is_main_process:  # finished with fewer steps (``steps`` raised): train on from the last checkpoint
        (out / SUMMARY).unlink(missing_ok=True)
    found = checkpoints(out)
    if not found:
        return False
    last = found[-1]
    if p.method == "lora":  # the checkpoint holds the adapter alone (trainable_only); the base is the start model's
        check_adapter_checkpoint(last, trainer.model)
    acc.load_state(str(last), strict=p.method != "lora")
    trainer.state = json.loads((last / STATE).read_text())
    if acc.is_main_process:
        print(f"resuming from {last} (step {trainer.state['step']})", flush=True)
    return True


def trainable_only(models, weights, output_dir) -> None:
    """accelerate's save-state hook for LoRA runs: each model's saved weights keep the trainable (adapter) tensors
    only. The frozen base is the start model, loaded again on resume; saved, it took 2.4 GB of every checkpoint of
    the 0.5B (docs/RL.md, "Checkpoints"). accelerate's documented hook (``register_save_state_pre_hook``); under
    FSDP or DeepSpeed the engines save their own shards and ``weights`` is empty: nothing changes there."""
    for model, state in zip(models, weights, strict=False):
        keep = {name for name, x in model.named_parameters() if x.requires_grad}
        for name in [name for name in state if name not in keep]:
            del state[name]


def check_adapter_checkpoint(folder: Path, model) -> None:
    """A LoRA checkpoint must hold every trainable tensor of this run (loaded with ``strict=False``, it would
    otherwise leave the adapter at its initial values without a word)."""
    from safetensors import safe_open

    saved: set[str] = set()
    for file in sorted(folder.glob("model*.safetensors")):
        with safe_open(str(file), "pt") as weights:
            saved |= set(weights.keys())
    missing = sorted(name for name, x in model.named_parameters() if x.requires_grad and name not in saved)
    if missing:
        raise RuntimeError(
            f"checkpoint {folder} lacks {len(missing)} of this run's trainable tensors (e.g. {missing[0]}): it is "
            "not this run's adapter; pass overwrite=True to start over"
        )


def save_checkpoint(trainer, step: int) -> None:
    out, acc = trainer.out, trainer.acc
    tmp = out / "checkpoints" / f"step-{step}.tmp"
    acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if acc.is_main_process:
        write_json_atomic(tmp / STATE, trainer.state)
        final = out / "checkpoints" / f"step-{step}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoints(out)[: -trainer.p.save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def finish(trainer) -> dict[str, Any]:
    """Save ``final/`` (LoRA merged) and the summary; every rank returns the summary."""
    out, acc = trainer.out, trainer.acc
    acc.wait_for_everyone()
    if acc.is_main_process:
        model = acc.unwrap_model(trainer.model)
        if hasattr(model, "peft_config"):
            model = model.merge_and_unload()
        tmp = out / "final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        trainer.tokenizer.save_pretrained(tmp)
        shutil.rmtree(out / "final", ignore_errors=True)
        os.replace(tmp, out / "final")
        rows = read_metrics(out)
        summary = {
            "steps": trainer.p.steps,
            "mode": trainer.p.mode,
            "start_model": trainer.model_path,
            "final": str(out / "final"),
            "wall_s": round(
                sum(r.get("time/step_s", 0) for r in rows), 1
            ),  # the steps only, checkpoint writes excluded
            "first": rows[0] if rows else None,
            "last": rows[-1] if rows else None,
        }
        write_json_atomic(out / SUMMARY, summary)
    acc.wait_for_everyone()
    return read_summary(out)


# ------------------------------------------------------------------ metrics


def batch_metrics(episodes, steps, rows, counts: Counter, timing: Counter, tokenizer) -> dict[str, float]:
    """What one step's rollouts did: rewards, groups, tool use, lengths, time."""
    calls = [c for r in episodes for c in r.tool_calls]
    sampled = sum(r.n_policy_tokens for r in episodes + steps)
    rollout_s = timing["rollout_s"] + timing["step_rollout_s"]
    m = {
        "reward": _mean([r.metadata["reward"] for r in episodes]),
        "accuracy": _mean([float(bool(r.correct)) for r in episodes]),
        "episode_rollouts": len(episodes),
        "calls_per_rollout": len(calls) / len(episodes) if episodes else 0.0,
        "tool_success": _mean([float(c.success) for c in calls]),
        "tool_timeout": _mean([float(c.timed_out) for c in calls]),
        "response_tokens": _mean([r.n_policy_tokens for r in episodes]),
        "step_prefixes": len({r.metadata["group"] for r in steps}),
        "step_rollouts": len(steps),
        "step_pass_rate": _mean([r.metadata["reward"] for r in steps]),
        "rows": len(rows),
        "rows_step": sum(r.level == 1 for r in rows),
        "infra_dropped": sum(r.metadata.get("infra_failure") is not None for r in episodes + steps),
        "time/rollout_s": timing["rollout_s"],
        "time/step_rollout_s": timing["step_rollout_s"],
        "time/sandbox_s": sum(c.duration_s for r in episodes + steps for c in r.tool_calls),
        "tokens_per_s": sampled / rollout_s if rollout_s else 0.0,
    }
    m.update({f"count/{k}": float(v) for k, v in counts.items()})
    return m


#: update statistics that are extremes, not sums: key -> (+1 max / -1 min, the value when a rank has none)
EXTREMA = {"logprob_diff_max": (1, 0.0), "ratio_max": (1, float("-inf")), "ratio_min": (-1, float("inf")),
           "tis_weight_max": (1, float("-inf")), "tis_weight_min": (-1, float("inf"))}  # fmt: skip


def merge_stats(total: Counter, part) -> Counter:
    """Add one micro-batch's (or optimizer step's) statistics into ``total``: sums add, ``EXTREMA`` take max/min."""
    for k, v in part.items():
        v = float(v)
        if k in EXTREMA:
            total[k] = (max if EXTREMA[k][0] > 0 else min)(total[k], v) if k in total else v
        else:
            total[k] += v
    return total


def reduce_stats(stats: Counter, acc) -> Counter:
    """Sum the per-rank sums of an optimizer step over ranks, max/min the ``EXTREMA`` (the grad norm is global)."""
    if acc.num_processes == 1:
        return stats
    import torch
    from accelerate.utils import gather_object

    # the union over ranks: a rank whose share of a mini-batch was empty ran only a zero-weight micro-step and has
    # none of the loss sums (fewer rows than ranks x updates_per_batch), and all ranks must reduce the same vector
    keys = sorted(set(gather_object([k for k in stats if k not in ("grad_norm", "optimizer_steps", *EXTREMA)])))
    summed = acc.reduce(torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=acc.device), "sum")
    ext = [(k, sign, stats[k] if k in stats else empty) for k, (sign, empty) in EXTREMA.items()]  # same on all ranks
    biggest = acc.reduce(torch.tensor([sign * v for _, sign, v in ext], dtype=torch.float64, device=acc.device), "max")
    out = Counter(dict(zip(keys, summed.tolist())))
    out.update({"grad_norm": stats["grad_norm"], "optimizer_steps": stats["optimizer_steps"]})
    out.update({k: sign * v for (k, sign, _), v in zip(ext, biggest.tolist())})
    return out


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def finalize_metrics(m: dict[str, float]) -> dict[str, float]:
    """Turn the update's sums into means over the step's optimizer steps (``updates_per_batch`` of them).

    ``clip_frac``, ``ratio_mean`` and ``ratio_std`` are means over all the step's trained tokens, weighted as the
    loss weights them (``losses.ratio_stats``); ``ratio_min`` / ``ratio_max`` the extremes over them. With one
    update per rollout batch they are 0, 1, 0, 1, 1: the ratio leaves 1 only from the second update on.
    """
    steps = m.pop("optimizer_steps", 0) or 1
    n = m.pop("trained_tokens", 0.0)
    m["entropy"] = m.pop("entropy_sum", 0.0) / n if n else float("nan")
    m["trained_tokens"] = n
    diff_n = m.pop("logprob_diff_n", 0)
    m["logprob_diff_abs"] = m.pop("logprob_diff_abs_sum", 0.0) / diff_n if diff_n else float("nan")
    m["logprob_diff_frac"] = m.pop("logprob_diff_over", 0.0) / diff_n if diff_n else float("nan")
    if "tis_weight_sum" in m:  # tis_cap on: the truncated-IS weights on the same tokens
        mean = m.pop("tis_weight_sum") / diff_n if diff_n else float("nan")
        sq = m.pop("tis_weight_sq_sum") / diff_n if diff_n else float("nan")
        m["tis_weight_mean"], m["tis_weight_std"] = mean, max(sq - mean**2, 0.0) ** 0.5 if diff_n else float("nan")
        m["tis_capped_frac"] = m.pop("tis_capped") / diff_n if diff_n else float("nan")
    else:  # (several ranks send their empty extremes)
        m.pop("tis_weight_min", None), m.pop("tis_weight_max", None)
    for k in ("loss", "pg_loss", "nll", "kl", "grad_norm"):
        if k in m:
            m[k] /= steps
    if "loss_weight" in m:
        w = m.pop("loss_weight")
        mean, dev_sq = (m.pop("ratio_mean", 0.0) / w, m.pop("ratio_dev_sq", 0.0) / w) if w else (float("nan"),) * 2
        m["ratio_mean"], m["ratio_std"] = mean, max(dev_sq - (mean - 1) ** 2, 0.0) ** 0.5 if w else float("nan")
        if "clip_frac" in m:
            m["clip_frac"] = m["clip_frac"] / w if w else float("nan")
    for k in ("ratio_min", "ratio_max", "tis_weight_min", "tis_weight_max"):
        if k in m and abs(m[k]) == float("inf"):
            m[k] = float("nan")
    m["optimizer_steps"] = steps
    return m


class MetricsLog:
    """``metrics.jsonl`` (main process), the same numbers to the ``report_to`` trackers, and a progress line per step
    with an ETA."""

    def __init__(self, out: Path, main: bool, report_to: str | list[str], total: int, start: int) -> None:
        self.path, self.main, self.total, self.start = out / METRICS, main, total, start
        self.t0 = time.monotonic()
        self.tracker = None
        if main:
            kept = [r for r in read_metrics(out) if r["step"] <= start]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
            self.tracker = Tracker(report_to, out, out.name, start)

    def write(self, step: int, metrics: dict[str, float], lines: bool) -> None:
        m = finalize_metrics(dict(metrics))
        if not self.main:
            return
        row = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in m.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tracker is not None:
            self.tracker.log(step, {k: v for k, v in row.items() if k != "step"})
        elapsed, done = time.monotonic() - self.t0, step - self.start
        eta = elapsed / done * (self.total - step)
        print(
            f"step {step}/{self.total}  reward {m['reward']:.3f}  tool ok {m['tool_success']:.2f}  "
            f"step pass {m['step_pass_rate']:.2f}  rows {m['rows']}  loss {m.get('loss', float('nan')):.4f}  "
            f"{m['time/step_s']:.0f} s/step  eta {eta / 60:.1f} min",
            flush=True,
        )

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()


def read_metrics(out: str | os.PathLike) -> list[dict[str, Any]]:
    return read_jsonl_rows(Path(out) / METRICS)


def write_samples(out: Path, step: int, records) -> None:
    folder = out / "samples"
    folder.mkdir(exist_ok=True)
    tmp = folder / f".step-{step}.jsonl.tmp"
    write_jsonl(records, tmp)
    os.replace(tmp, folder / f"step-{step}.jsonl")
