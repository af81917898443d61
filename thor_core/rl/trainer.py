"""The hierarchical-RL trainer (THOR stage 3): one loop over the kit's rollout engine and accelerate.

One step: sample G rollouts for each of the step's questions through the
engine (vLLM or hf backend, tools in the sandbox); grade them; build the
episode groups; in ``thor`` mode cut step-level prefixes at failed calls and
sample G one-code-block continuations each; drop groups without reward
spread and sample more questions while the batch is short (at most
``max_refill_rounds`` rounds, counted); compute group advantages on whole
groups; then update the policy on the rows with ``thor_core.rl.losses`` and
push the new weights into the engine. ``cot`` mode is the same without tools.

On-policy by default: one optimizer step per rollout batch, the ratio's old
log-probs being the trainer's own, detached (ratio 1, as TRL does). With
``updates_per_batch`` U > 1 (the authors' variant) the batch is split into U
mini-batches (rows u, u + U, ... of the batch sorted by level, group and sample,
so that 1 and N processes split it alike), one optimizer step each, and the old
log-probs are computed once by the trainer before the first. Each step's metrics hold the
importance ratio on the trained tokens of its U updates (``ratio_mean``,
``ratio_std``, ``ratio_min``, ``ratio_max``) and ``clip_frac``, where a clip
acted (``thor_core.rl.losses.ratio_stats``). The engine's sampled log-probs are
compared with the trainer's (under the same weights) on every trained token: the mean and largest gap, the
share of tokens past ``mismatch_threshold`` (``logprob_diff_abs``, ``logprob_diff_max``, ``logprob_diff_frac``);
``tis_cap`` turns on truncated importance sampling on it, and then the weights' mean, std, min, max and capped
share are logged (``tis_weight_*``, ``tis_capped_frac``). The update's forward pass also leaves each trained row's
per-token log-probs and entropies on its record (gathered from every rank), which the step's samples save: the
per-token audit ``thor_core.viewer`` shows.

Several processes (``accelerate launch``): every rank samples whole groups
for its share of the questions; the rows are gathered on every rank, so the
filters, advantages and loss normalisers (token and row counts) are those of
the whole batch; rank r then trains on rows r, r + n, ...; every rank runs
the same number of micro-steps (a rank short of rows runs a zero-weight
one), and the loss is scaled by the number of ranks to undo DDP's gradient
mean: 1 and N processes take the same optimizer steps.

Resumable (``thor_core.rl.run``): a checkpoint after every ``save_steps``
(model, optimizer, scheduler, RNG states via ``accelerator.save_state``, and
the step and data position); rollouts are seeded by (seed, step, question,
sample), so a run killed at any moment and restarted continues as if never
stopped. A sandbox health check runs before the first step; a step whose
calls time out beyond ``infra_failure_limit`` stops the run unless the
timed-out calls, run again alone, time out again (the model's slow code).
A call the re-run rule finds the sandbox failed leaves its record out of its
group's advantage and loss (``thor_core.rl.batch``; ``infra_dropped`` counts them).

Not covered: asynchronous (off-policy) rollouts, a separate vLLM server for
the policy, sequence packing.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections import Counter
from contextlib import ExitStack, nullcontext
from typing import Any

import torch

from thor_core import tir
from thor_core.backends import make_backend
from thor_core.backends.base import release_freed_memory
from thor_core.engine.rollout import (
    SESSION_LOST,
    RolloutConfig,
    RolloutTask,
    mix_seed,
    replay_calls,
    rollout_config,
    run_rollouts,
)
from thor_core.grading import Grader
from thor_core.hardware import bf16_autocast
from thor_core.progress import mode as progress_mode
from thor_core.rl import batch as rb
from thor_core.rl import run as rr
from thor_core.rl.config import RLParams
from thor_core.rl.losses import (
    batch_totals,
    mismatch_stats,
    nll_weights,
    policy_loss,
    token_weights,
    truncated_is_weight,
)
from thor_core.rl.policy import engine_weights, load_policy, token_logprobs
from thor_core.sandbox import open_sandbox

# Timed-out calls re-run alone when a step's timeouts pass infra_failure_limit (Trainer._check_infrastructure).
INFRA_RERUNS = 8


class InfrastructureFailure(RuntimeError):
    """The sandbox failed on too many calls: the model is not to blame, so training stops."""


# The observations of a cell that died of something outside its code's control, as the sandbox's trusted side words
# them (the last stderr line, ``thor_core.sandbox.forkserver.SessionHolder._note``): a signal the holder did not
# send (it sends its own for timeouts, memory and output floods, with their own lines), a lost state process, or
# (the rollout loop's line) a whole session lost.
SANDBOX_FAULTS = (
    "Error: the cell's process was killed by signal",
    "SandboxError: the session's state process was lost",
    SESSION_LOST,  # the whole session died under the call (engine.rollout recorded it and went on in a new one)
)


def sandbox_fault(observation: str) -> bool:
    """Whether a call's observation says the sandbox may have failed it (the re-run rule decides)."""
    return observation.startswith(SANDBOX_FAULTS)


def run_alone(sandbox, record, i: int, timeout_s: float | None):
    """Call ``i`` of ``record`` run again in a fresh session that holds the state of its earlier calls."""
    with sandbox.session() as session:
        replay_calls(session, record.tool_calls[:i], timeout_s)
        return session.run(record.tool_calls[i].code, timeout_s)


def rollout_configs(p: RLParams) -> tuple[RolloutConfig, RolloutConfig]:
    """(episode, step-level) engine settings."""
    episode = rollout_config(p, tools=p.tools)  # the tasks carry their seeds
    step = rollout_config(
        p,
        max_new_tokens=p.max_new_tokens + p.step_max_new_tokens,  # the prefix's tokens count against the budget
        max_tool_rounds=1,
        stop_after_code=True,
        stop_at_failed_call=False,
    )
    return episode, step


def question_order(n: int, p: RLParams, epoch: int) -> list[int]:
    """Epoch ``epoch``'s order of the ``n`` training questions: seeded by ``data_seed``, or ``seed`` when unset."""
    order = list(range(n))
    random.Random(mix_seed(p.seed if p.data_seed is None else p.data_seed, "epoch", epoch)).shuffle(order)
    return order


class Trainer:
    def __init__(self, p: RLParams, progress: bool = True) -> None:
        from accelerate import Accelerator

        self.p, self.out = p, p.out()
        self.acc = Accelerator(cpu=not torch.cuda.is_available())
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.lines = p.progress == "lines" or (p.progress == "auto" and (not progress or progress_mode() == "lines"))
        self.bars = progress and not self.lines  # rollout bars: widgets in JupyterLab, text on a terminal
        self.model_path = rr.resolve_start_model(p.model)
        self.bf16 = bf16_autocast(p.bf16, self.acc.device.type)  # fp32 where bf16 would be emulated
        self.problems, self.decontamination = rr.decontaminated_problems(p)
        torch.manual_seed(p.seed)
        model, self.tokenizer = load_policy(self.model_path, p.method, p.lora_r, p.lora_alpha, p.gradient_checkpointing)
        self.ref = copy.deepcopy(model).eval().requires_grad_(False) if p.kl_beta and p.method == "full" else None
        trainable = [x for x in model.parameters() if x.requires_grad]
        # fused, as TRL's default: the per-tensor AdamW path is several times slower on the CPU (BENCHMARKS.md, RL step)
        optimizer = torch.optim.AdamW(trainable, lr=p.learning_rate, weight_decay=p.weight_decay, fused=True)
        warm = max(p.warmup_steps, 0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        self.model, self.optimizer, self.scheduler = self.acc.prepare(model, optimizer, scheduler)
        if p.method == "lora":
            self.acc.register_save_state_pre_hook(rr.trainable_only)  # checkpoints hold the adapter alone
        self.state = {"step": 0, "cursor": 0}

    # -- data ------------------------------------------------------------
    def _questions(self, n: int):
        """The next ``n`` questions of the seeded, epoch-by-epoch order (global, the same on every rank)."""
        out, N = [], len(self.problems)
        for i in range(self.state["cursor"], self.state["cursor"] + n):
            out.append((i, self.problems[question_order(N, self.p, i // N)[i % N]]))
        self.state["cursor"] += n
        return out

    def _episode_tasks(self, questions, step: int) -> list[RolloutTask]:
        mode = "tir" if self.p.tools else "cot"
        tasks = []
        for i, problem in questions:
            prompt = self.tokenizer.encode(
                tir.render_prompt(self.tokenizer, problem.question, mode), add_special_tokens=False
            )
            group = f"e/{step}/{i}"
            for k in range(self.p.group_size):
                tasks.append(
                    RolloutTask(
                        question_id=str(problem.id),
                        question=problem.question,
                        gold_answer=problem.answer,
                        prompt_ids=prompt,
                        seed=mix_seed(self.p.seed, "episode", step, i, k),
                        metadata={"group": group, "rl_level": "episode", "step": step, "sample": k, "mode": mode},
                    )
                )
        return tasks

    # -- one step's batch ------------------------------------------------
    def collect(self, step: int, backend, sandbox, grader) -> tuple[list[rb.Row], dict[str, Any], list]:
        """Rollouts, rewards, groups (refilled while short), advantages: the step's rows on every rank."""
        from accelerate.utils import gather_object

        p = self.p
        ep_cfg, step_cfg = rollout_configs(p)
        counts, rows, records = Counter(), [], []
        timing, kept = Counter(), 0
        for round_ in range(1 + p.max_refill_rounds):
            questions = self._questions(p.questions_per_step - kept)
            mine = questions[self.rank :: self.world]
            t0 = time.monotonic()
            episodes = self._rollouts(backend, sandbox, self._episode_tasks(mine, step), ep_cfg, "episode")
            self._check_infrastructure(episodes, sandbox, counts)  # before the prefixes: no prefix at its failure
            rewards = [float(grader.grade_completion(r.gold_answer, r.completion_text).correct) for r in episodes]
            for r, reward in zip(episodes, rewards):
                r.correct, r.metadata["reward"] = bool(reward), reward
            new, c = rb.episode_rows(episodes, rewards, p, self.tokenizer)
            counts.update(c)
            timing["rollout_s"] += time.monotonic() - t0
            if p.mode == "thor":
                t0 = time.monotonic()
                rng = random.Random(mix_seed(p.seed, "prefixes", step, round_, self.rank))
                tasks = rb.step_tasks(rb.step_prefixes(episodes, p, rng), p, self.tokenizer)
                continuations = self._rollouts(backend, sandbox, tasks, step_cfg, "step level")
                for r in continuations:
                    r.metadata["reward"] = rb.step_reward(r)
                self._check_infrastructure(continuations, sandbox, counts)
                step_new, c = rb.step_level_rows(continuations, p)
                new += step_new
                counts.update(c)
                records_step = continuations
                timing["step_rollout_s"] += time.monotonic() - t0
            else:
                records_step = []
            gathered = gather_object([(new, episodes, records_step, dict(counts))])
            rows += [row for part in gathered for row in part[0]]
            records += [(part[1], part[2]) for part in gathered]
            counts = sum((Counter(part[3]) for part in gathered), Counter())
            spread = rb.groups_with_spread(rows)
            kept = len({r.group for r in rows if r.level == rb.EPISODE and r.group in spread})
            counts["refill_rounds"] = round_
            if kept >= p.questions_per_step or round_ == p.max_refill_rounds:
                break
        rows, spread_counts = rb.with_advantages(rows, p.adv_eps)
        counts.update(spread_counts)
        episodes = [r for part in records for r in part[0]]
        steps = [r for part in records for r in part[1]]
        return rows, rr.batch_metrics(episodes, steps, rows, counts, timing, self.tokenizer), episodes + steps

    def _rollouts(self, backend, sandbox, tasks, cfg, what: str):
        if self.lines and self.acc.is_main_process:
            print(f"  {what}: {len(tasks)} rollouts on rank {self.rank} ...", flush=True)
        return run_rollouts(backend, sandbox if cfg.tools else None, tasks, cfg, progress=self.bars)

    def _check_infrastructure(self, records, sandbox, counts: Counter) -> None:
        """Find the calls the sandbox, not the model, failed (marked, so ``rl.batch`` drops their records); stop
        when the sandbox made more than ``infra_failure_limit`` of these records' calls time out.

        A failure alone does not always say whose fault it is. A timeout: an overloaded sandbox, or the model's own
        slow program (a ``while True`` search). A cell killed by a signal the sandbox did not send, or a lost state
        process (``sandbox_fault``): the host (an OOM killer, a dying worker), or the model's own code (a segfault,
        a kill of itself). So such calls run again alone, each in a fresh session given its trajectory's earlier
        successful calls: one that now ends without that failure failed because of the sandbox, and its record's
        ``metadata["infra_failure"]`` gets the call's index; one that fails the same way again failed because of
        its code. Killed and lost calls are always re-run (at most ``INFRA_RERUNS``; they are rare and quick);
        timeouts only when they pass the limit (the first ``INFRA_RERUNS``: each re-run of the model's own slow
        code costs a whole timeout), and then the run stops when the sandbox's estimated share of the calls
        (timeouts x finished / re-run) passes the limit. A session whose holder process died raises SandboxError
        in the rollout and stops the run there.
        """
        p = self.p
        calls = [(r, i) for r in records for i in range(len(r.tool_calls))]
        faults = [(r, i) for r, i in calls if sandbox_fault(r.tool_calls[i].observation)][:INFRA_RERUNS]
        for r, i in faults:
            again = run_alone(sandbox, r, i, p.code_timeout_s)
            if not (again.timed_out or sandbox_fault(again.observation)):
                r.metadata["infra_failure"] = i
        if faults:
            counts.update(sandbox_faults_rerun=len(faults))
        timed_out = [(r, i) for r, i in calls if r.tool_calls[i].timed_out]
        if not calls or len(timed_out) / len(calls) <= p.infra_failure_limit:
            return
        rerun, finished = timed_out[:INFRA_RERUNS], 0
        for r, i in rerun:
            if not run_alone(sandbox, r, i, p.code_timeout_s).timed_out:
                finished += 1
                r.metadata["infra_failure"] = i
        counts.update(timeouts_rerun=len(rerun), timeouts_rerun_finished=finished)
        what = (f"{len(timed_out)} of {len(calls)} code calls timed out this step (limit: {p.infra_failure_limit:.0%}); "
                f"run again alone, {finished} of {len(rerun)} finished in time")  # fmt: skip
        if len(timed_out) * finished / len(rerun) / len(calls) > p.infra_failure_limit:
            raise InfrastructureFailure(
                f"{what}: the sandbox, not the model, is too slow. Is it overloaded (fewer rollouts at once, more "
                "sandbox hosts) or code_timeout_s too short for this machine?"
            )
        if self.acc.is_main_process:
            print(f"  note: {what}: mostly the model's own slow code, training goes on", flush=True)

    # -- the update ------------------------------------------------------
    def update(self, rows: list[rb.Row]) -> dict[str, float]:
        """U optimizer steps on the rows (U = updates_per_batch mini-batches), this rank's share of each."""
        p, stats = self.p, Counter()
        if not rows:
            return {"skipped_update": 1.0}
        if p.updates_per_batch > 1:  # the gathered order follows the ranks: sort, so 1 and N processes split alike
            rows = sorted(rows, key=lambda r: (r.level, r.group, r.record.metadata.get("sample", 0)))
        # fewer rows than U (groups filtered away): one optimizer step per row, never an empty mini-batch
        minis = [rows[u :: p.updates_per_batch] for u in range(min(p.updates_per_batch, len(rows)))]
        t0 = time.monotonic()  # on-policy, the old log-probs are the update's own forward pass: no extra time
        # off-policy, before the first update and only for the rows this rank trains (a rank short of rows
        # runs a zero-weight micro-step on the mini-batch's first row: see _optimizer_step)
        mine = [r for mini in minis for r in (mini[self.rank :: self.world] or mini[:1])]
        old = self._old_logprobs(mine) if p.updates_per_batch > 1 else None
        stats["time/logprob_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        audit: dict[int, tuple] = {}
        for mini in minis:  # U optimizer steps: from the second on the ratio leaves 1 and the clips can act
            rr.merge_stats(stats, self._optimizer_step(mini, old, audit))
        stats["time/update_s"] = time.monotonic() - t0
        self._keep_audit(rows, audit)
        return dict(stats)

    def _keep_audit(self, rows: list[rb.Row], audit: dict[int, tuple]) -> None:
        """Put each trained row's per-token log-probs and entropies (this rank's or, gathered, another's) on its
        record, which the step's samples save (``Trajectory.trainer_logprobs``, ``Trajectory.entropy``)."""
        position = {id(row): i for i, row in enumerate(rows)}
        mine = [(position[key], logp, ent) for key, (logp, ent) in audit.items()]
        if self.world > 1:
            from accelerate.utils import gather_object

            mine = gather_object(mine)
        for i, logp, ent in mine:
            rows[i].record.trainer_logprobs, rows[i].record.entropy = logp, ent

    def _old_logprobs(self, rows) -> dict[int, torch.Tensor]:
        out = {}
        with torch.no_grad():
            for chunk in _chunks(rows, self.p.micro_batch_rows):
                b = self._collate(chunk)
                logp, _ = token_logprobs(self.model, b, self.p.temperature, bf16=self.bf16)
                for row, lp in zip(chunk, logp):
                    out[id(row)] = lp[: len(row.record.completion_ids)]
        return out

    def _collate(self, rows):
        b = rb.collate(rows, self.tokenizer.pad_token_id)
        return {k: v.to(self.acc.device) for k, v in b.items()}

    def _optimizer_step(self, rows: list[rb.Row], old: dict | None, audit: dict[int, tuple]) -> Counter:
        """One optimizer step on ``rows`` (this rank's share); ``audit`` gets id(row) -> (the trainer's log-probs
        under the sampling weights, entropies) per completion token of each row this rank trained."""
        p, acc = self.p, self.acc
        levels = None if p.combine == "joint" else torch.tensor([r.level for r in rows])
        full = rb.collate(rows, self.tokenizer.pad_token_id)
        row_levels = levels if levels is not None else torch.zeros(len(rows), dtype=torch.long)
        totals = batch_totals(full["trained"], row_levels)
        positive = full["trained"] * (full["advantages"] > 0).float()[:, None]
        nll_totals = batch_totals(positive, row_levels)
        mine = rows[self.rank :: self.world]
        n_micro = math.ceil(max(math.ceil(len(rows) / self.world), 1) / p.micro_batch_rows)
        chunks = list(_chunks(mine, p.micro_batch_rows)) if mine else []
        while len(chunks) < n_micro:  # the same number of micro-steps on every rank
            chunks.append(None)
        stats = Counter()
        for i, chunk in enumerate(chunks):
            weight = 1.0 if chunk is not None else 0.0
            chunk = chunk or rows[:1]
            b = self._collate(chunk)
            lv = b["levels"] if p.combine == "separate" else None
            w = token_weights(b["trained"], p.aggregation, lv, totals) * weight
            nw = nll_weights(b["trained"], b["advantages"], lv, nll_totals) * weight
            sync = nullcontext() if i == len(chunks) - 1 else acc.no_sync(self.model)
            with sync:
                logp, ent = token_logprobs(self.model, b, p.temperature, entropy=True, bf16=self.bf16)
                old_logp = (
                    torch.nn.utils.rnn.pad_sequence([old[id(r)] for r in chunk], batch_first=True)
                    if old is not None
                    else logp.detach()
                )
                engine = b["engine_logp"]
                known = (b["trained"] > 0) & ~torch.isnan(engine)
                is_w = None
                if p.tis_cap is not None:
                    is_w = torch.where(known, truncated_is_weight(old_logp, torch.nan_to_num(engine), p.tis_cap), 1.0)
                ref = None
                if p.kl_beta:
                    ref = self._ref_logprobs(b)
                loss, s = policy_loss(
                    logp, old_logp, b["advantages"], w, nw, eps_low=p.eps_low, eps_high=p.eps_high,
                    dual_clip=p.dual_clip, nll_alpha=p.nll_alpha, ref_logp=ref, kl_beta=p.kl_beta, is_weight=is_w,
                )  # fmt: skip
                acc.backward(loss * self.world)
            if weight:
                diff = (engine - old_logp.detach())[known]  # the same weights: numerics, not the policy's change
                for row, lp, e in zip(chunk, old_logp.detach().cpu(), ent.cpu()):
                    n = len(row.record.completion_ids)
                    audit[id(row)] = (lp[:n].tolist(), e[:n].tolist())
                rr.merge_stats(stats, s)  # sums add; ratio_min / ratio_max take min / max
                tis = (is_w[known], p.tis_cap) if is_w is not None else None
                rr.merge_stats(stats, {k: float(v) for k, v in mismatch_stats(diff, p.mismatch_threshold, tis).items()})
                stats["loss"] += float(loss.detach())
                stats["entropy_sum"] += float((ent * b["trained"]).sum())
                stats["trained_tokens"] += float(b["trained"].sum())
        norm = acc.clip_grad_norm_(self.model.parameters(), p.max_grad_norm) if p.max_grad_norm else None
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        stats["grad_norm"] += float(norm) if norm is not None else 0.0
        stats["optimizer_steps"] += 1
        return rr.reduce_stats(stats, acc)

    def _ref_logprobs(self, b):
        with torch.no_grad():
            if self.ref is not None:
                return token_logprobs(self.ref, b, self.p.temperature, bf16=self.bf16)[0]
            with self.acc.unwrap_model(self.model).disable_adapter():
                return token_logprobs(self.model, b, self.p.temperature, bf16=self.bf16)[0]

    def step(self, backend, sandbox, grader) -> tuple[dict[str, float], list]:
        """One RL step (rollouts, update, weight push); returns its metrics and records and advances the step."""
        step, t0 = self.state["step"], time.monotonic()
        rows, metrics, records = self.collect(step, backend, sandbox, grader)
        metrics.update(self.update(rows))
        del rows  # the update's activations and this step's tensors go back to the system before the next rollouts
        release_freed_memory()  # (glibc keeps them in the training thread's arena otherwise; docs/BENCHMARKS.md)
        metrics["time/sync_s"] = self.push_weights(backend)
        metrics["time/step_s"] = time.monotonic() - t0
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        self.state["step"] = step + 1
        return metrics, records

    def push_weights(self, backend) -> float:
        t0 = time.monotonic()
        backend.load_weights(engine_weights(self.acc.unwrap_model(self.model)))
        return time.monotonic() - t0

    # -- the run ---------------------------------------------------------
    def train(self, backend=None) -> dict[str, Any]:
        """The run; ``backend`` replaces the engine made from ``p.backend`` (tests pass a scripted one)."""
        p = self.p
        resumed = rr.prepare_folder(self, p)
        if rr.is_finished(self.out):
            return rr.read_summary(self.out)
        with ExitStack() as stack:
            sandbox = None
            if p.tools:  # before the engine starts: a sandbox host that does not answer stops the run at once
                record = self.out if self.acc.is_main_process else None  # sandbox.json: the hosts that ran the code
                sandbox = stack.enter_context(open_sandbox(p.sandbox_urls, record))
                sandbox.health_check()
            if backend is None:
                backend = stack.enter_context(make_backend(p.backend, self.model_path, **rr.backend_options(p)))
            grader = stack.enter_context(Grader())
            if resumed:
                self.push_weights(backend)
            log = rr.MetricsLog(self.out, self.acc.is_main_process, p.report_to, p.steps, self.state["step"])
            while self.state["step"] < p.steps:
                step = self.state["step"]
                metrics, records = self.step(backend, sandbox, grader)
                log.write(step + 1, metrics, self.lines)
                if self.acc.is_main_process and p.samples_every and (step + 1) % p.samples_every == 0:
                    rr.write_samples(self.out, step + 1, records)
                if (step + 1) % p.save_steps == 0 or step + 1 == p.steps:
                    rr.save_checkpoint(self, step + 1)
            log.close()
        return rr.finish(self)


def _chunks(xs: list, n: int):
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


def train(p: RLParams, progress: bool = True, backend=None) -> dict[str, Any]:
    """Run (or resume, or return the summary of a finished) RL run; see the module docstring.

    The policy, optimizer and engine are freed before returning (a notebook goes on to evaluate other models).
    """
    trainer = Trainer(p, progress)
    try:
        return trainer.train(backend)
    finally:
        trainer.acc.free_memory()
        del trainer
        release_freed_memory()
