"""The rollout engine: tool-integrated generation on token ids.

One coroutine per trajectory: generate until a ```python block closes, run it
in the trajectory's sandbox session, insert the ```output block, continue,
until EOS, a boxed answer, the token budget or the tool-round limit. All
backends (``thor_core.backends``) serve these coroutines concurrently, so a
trajectory waiting for its tool never stalls the others.

Token bookkeeping is exact by construction: the record's ids are the ids the
backend sampled plus the ids of the inserted blocks, in order; nothing is
re-tokenised from rendered text. The mask marks sampled tokens 1 and inserted
tokens 0; every tool call carries its code span and output span.

Covered: the tool loop and its limits; self-correction (its rule is ``thor_core.engine.correction``: backtrack over
a failed call, regenerate suffix and code, at most ``max_corrections`` tries per failing call, retries counting as
tool rounds);
continuing from any prefix (TIRGen's rewritten steps, step-level RL's cut
points) with the sandbox state replayed; stopping after one executed code
block, at the first failed call (RL's training shortcut) or after one
reasoning step; chain-of-thought mode without tools. A session that dies under a call (its holder process gone:
``SandboxError``) costs that call, not the run: the call is recorded as failed with ``SESSION_LOST``'s line (RL's
infrastructure check re-runs it and drops the rollout from the baselines), a new session gets the trajectory's
state replayed, and the trajectory goes on; a sandbox that cannot open a new one still stops the run.
Not covered: grading (``thor_core.grading``) and best-of-N selection
(``thor_core.engine.best_of_n``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from thor_core import tir
from thor_core.backends.base import (
    FINISH_EOS,
    FINISH_LENGTH,
    Backend,
    SamplingParams,
    Segment,
    SegmentRequest,
    ends_with_stop,
)
from thor_core.engine import correction
from thor_core.progress import bar as progress_bar
from thor_core.record import Correction, ToolCall, Trajectory
from thor_core.sandbox import ExecResult, SandboxError

CODE_STOP = "```\n"  # the segment may have closed a code block: the loop checks whether it did


@dataclass(frozen=True)
class RolloutConfig:
    """Limits and options of one rollout; defaults follow the paper's RL settings (docs/METHOD.md)."""

    max_new_tokens: int = 4096  # completion budget: sampled plus inserted tokens
    max_tool_rounds: int = 5  # executed code blocks, retries included (paper: 5 in RL, 10 at evaluation)
    tools: bool = True  # False: chain-of-thought, code blocks are not executed
    sampling: SamplingParams = field(default_factory=SamplingParams)
    seed: int = 0
    observation: tir.ObservationFormat = tir.DEFAULT_OBSERVATION
    stop_after_answer: bool = True  # end once a segment leaves a \boxed{} answer outside code
    self_correction: bool = False
    correction_suffix_tokens: int = 500  # L_suf at inference (authors: 500; step-level RL uses 100)
    max_corrections: int = 4  # N_corr retries per failing call; reset after a success
    stop_after_code: bool = False  # step-level RL: end after exactly one executed code block
    stop_at_failed_call: bool = False  # RL training shortcut (authors): end at the first failed call
    step_stop: tuple[str, ...] = ()  # TIRGen actor steps: end the rollout at one of these (e.g. "\n\n")
    code_timeout_s: float | None = None  # per call; None = the sandbox's default

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "correction_suffix_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"RolloutConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_tool_rounds", "max_corrections"):
            if getattr(self, name) < 0:
                raise ValueError(f"RolloutConfig.{name} must be >= 0, got {getattr(self, name)}")


# RolloutConfig fields a stage's flat parameters may carry under the same name (with the stage's prefix)
_FLAT = ("max_new_tokens", "max_tool_rounds", "seed", "correction_suffix_tokens", "max_corrections",
         "stop_at_failed_call", "code_timeout_s")  # fmt: skip


def rollout_config(p: Any, prefix: str = "", **overrides: Any) -> RolloutConfig:
    """The one mapping of a stage's flat parameters onto ``RolloutConfig``.

    Each field in ``_FLAT`` and the sampling's ``temperature`` / ``top_p`` is read from attribute ``prefix + name``
    where ``p`` has one (``eval_max_new_tokens`` with prefix ``eval_``); ``overrides`` set the rest (or win).
    """
    kwargs: dict[str, Any] = {n: getattr(p, prefix + n) for n in _FLAT if hasattr(p, prefix + n)}
    sampling = {n: getattr(p, prefix + n) for n in ("temperature", "top_p") if hasattr(p, prefix + n)}
    if sampling and "sampling" not in overrides:
        kwargs["sampling"] = SamplingParams(**sampling)
    return RolloutConfig(**{**kwargs, **overrides})


@dataclass
class RolloutTask:
    """One trajectory to produce: a prompt and, optionally, a prefix to continue from."""

    question_id: str
    question: str
    gold_answer: str | None
    prompt_ids: list[int]
    prefix: Trajectory | None = None  # completion so far (ids, mask, calls): continued, never re-sampled
    seed: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    max_new_tokens: int | None = None  # this task's completion budget after its prefix (None: the config's)


def make_tasks(
    problems: Iterable, tokenizer, mode: str = "tir", n_samples: int = 1, seed: int = 0
) -> list[RolloutTask]:
    """``n_samples`` tasks per problem (objects with ``id``, ``question``, ``answer``), chat-templated."""
    tasks = []
    for problem in problems:
        prompt_ids = tokenizer.encode(tir.render_prompt(tokenizer, problem.question, mode), add_special_tokens=False)
        for k in range(n_samples):
            tasks.append(
                RolloutTask(
                    question_id=str(problem.id),
                    question=problem.question,
                    gold_answer=problem.answer,
                    prompt_ids=prompt_ids,
                    seed=mix_seed(seed, str(problem.id), k),
                    metadata={"sample": k, "mode": mode, "source": getattr(problem, "source", "")},
                )
            )
    return tasks


def mix_seed(*parts) -> int:
    """A stable 31-bit seed from parts (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


class _Builder:
    """The growing completion: ids, mask, log-probs, calls and corrections."""

    def __init__(self, task: RolloutTask, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.prompt_ids = list(task.prompt_ids)
        prefix = task.prefix
        self.ids: list[int] = list(prefix.completion_ids) if prefix else []
        self.mask: list[int] = list(prefix.mask) if prefix else []
        self.logprobs: list[float | None] = (
            list(prefix.logprobs) if prefix and prefix.logprobs else [None] * len(self.ids)
        )
        self.calls: list[ToolCall] = list(prefix.tool_calls) if prefix else []
        self.corrections: list[Correction] = []
        self.floor = len(self.ids)  # never backtrack into the prefix or an inserted block
        self.has_logprobs = True

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=False)

    def add_sampled(self, segment: Segment) -> None:
        self.ids += segment.ids
        self.mask += [1] * len(segment.ids)
        if segment.logprobs is None:
            self.has_logprobs = False
            self.logprobs += [None] * len(segment.ids)
        else:
            self.logprobs += segment.logprobs

    def add_inserted(self, text: str) -> tuple[int, int]:
        new = self.tokenizer.encode(text, add_special_tokens=False)
        start = len(self.ids)
        self.ids += new
        self.mask += [0] * len(new)
        self.logprobs += [None] * len(new)
        self.floor = len(self.ids)
        return start, len(self.ids)

    def token_at_char(self, offset: int) -> int:
        """Index of the token holding character ``offset`` of the completion text."""
        lo, hi = 0, len(self.ids)  # smallest k with len(decode(ids[:k])) > offset
        while lo < hi:
            mid = (lo + hi) // 2
            if len(self.tokenizer.decode(self.ids[:mid], skip_special_tokens=False)) > offset:
                hi = mid
            else:
                lo = mid + 1
        return max(lo - 1, 0)

    def backtrack(self, to: int) -> str:
        dropped = self.tokenizer.decode(self.ids[to:], skip_special_tokens=False)
        del self.ids[to:], self.mask[to:], self.logprobs[to:]
        return dropped


async def rollout_one(backend: Backend, sandbox, task: RolloutTask, cfg: RolloutConfig, session=None) -> Trajectory:
    """Produce one trajectory for ``task`` (see the module docstring for the loop).

    ``session``: an open sandbox session to run the code in, kept open
    afterwards and not replayed (TIRGen runs a trajectory's actor steps and
    critic rewrites in one session, so state carries from step to step); by
    default a new session of ``sandbox`` is opened, the prefix's calls are
    replayed into it, and it is closed at the end.
    """
    b = _Builder(task, backend.tokenizer)
    key = f"{task.question_id}/{uuid.uuid4().hex}"
    own_session = session is None and cfg.tools
    if own_session:
        session = sandbox.session()
    rounds, retries, segments = 0, 0, 0
    stops = tuple(dict.fromkeys(((CODE_STOP,) if cfg.tools else ()) + cfg.step_stop))
    base_seed = task.seed if task.seed is not None else cfg.seed
    finish = ""
    limit = cfg.max_new_tokens if task.max_new_tokens is None else len(b.ids) + task.max_new_tokens
    try:
        if own_session:
            await asyncio.to_thread(replay_calls, session, b.calls, cfg.code_timeout_s)  # the prefix's state
        while not finish:
            budget = limit - len(b.ids)
            if budget <= 0:
                finish = "length"
                break
            segment = await backend.generate(
                SegmentRequest(
                    ids=b.prompt_ids + b.ids,
                    max_new_tokens=budget,
                    stop=stops,
                    sampling=cfg.sampling,
                    seed=mix_seed(base_seed, segments),
                    key=key,
                )
            )
            segments += 1
            b.add_sampled(segment)
            text = b.text()
            if segment.finish == FINISH_EOS:
                finish = "eos"
            elif segment.finish == FINISH_LENGTH:
                finish = "length"
            block = tir.pending_code_block(text) if cfg.tools and not finish else None
            if block is None:
                if finish:
                    break
                if (
                    cfg.step_stop
                    and not tir.in_open_code_block(text)
                    and ends_with_stop(backend.tokenizer, segment.ids, cfg.step_stop)
                ):
                    finish = "step"
                elif cfg.stop_after_answer and _answered(text):
                    finish = "answer"
                continue  # a stop string that closed no python block: keep generating
            if cfg.stop_after_answer and _answered(text[: block.start]):
                finish = "answer"
                break
            if rounds >= cfg.max_tool_rounds:
                finish = "max_tool_rounds"
                break
            rounds += 1
            code_start = b.token_at_char(block.start)
            try:
                result = await asyncio.to_thread(session.run, block.code, cfg.code_timeout_s)
            except SandboxError as error:
                if not own_session:
                    raise  # the caller's session (TIRGen's actor and critic share one): its state is the caller's
                session = await asyncio.to_thread(reopen_session, sandbox, session, b.calls, cfg.code_timeout_s)
                result = session_lost(error)
            if correction.wants_retry(result.success, cfg, retries, rounds):
                retries += 1
                cut = correction.backtrack_to(code_start, b.floor, cfg)
                b.corrections.append(
                    Correction(
                        at_token=cut, dropped_text=b.backtrack(cut), code=block.code, observation=result.observation
                    )
                )
                continue
            retries = 0
            output_span = b.add_inserted(tir.output_block_prefix(text) + tir.render_output_block(result.observation))
            b.calls.append(
                ToolCall(
                    code=block.code,
                    success=result.success,
                    observation=result.observation,
                    code_span=(code_start, output_span[0]),
                    output_span=output_span,
                    timed_out=result.timed_out,
                    duration_s=result.duration_s,
                    exited_cleanly=result.exited_cleanly,
                )
            )
            if cfg.stop_after_code:
                finish = "code_executed"
            elif cfg.stop_at_failed_call and not result.success:
                finish = "failed_call"
    finally:
        backend.release(key)
        if own_session:
            session.close()
    text = b.text()
    return Trajectory(
        question_id=task.question_id,
        question=task.question,
        gold_answer=task.gold_answer,
        prompt_ids=b.prompt_ids,
        completion_ids=b.ids,
        mask=b.mask,
        logprobs=b.logprobs if b.has_logprobs else None,
        tool_calls=b.calls,
        corrections=b.corrections,
        completion_text=text,
        final_answer=tir.last_boxed(text),
        finish_reason=finish,
        metadata={
            **task.metadata,
            "seed": base_seed,
            "segments": segments,
            "tool_rounds": rounds,
            "backend": backend.name,
        },
    )


# The observation of a call whose session died under it (the first words are what ``rl.trainer.SANDBOX_FAULTS``
# matches, as for the sandbox's own "state process was lost" line).
SESSION_LOST = "SandboxError: the session was lost"


def session_lost(error: SandboxError) -> ExecResult:
    """The result of a call that ran in no sandbox: failed, nothing kept, the reason as its observation."""
    line = f"{SESSION_LOST} ({error}); the call did not run"
    return ExecResult(success=False, exited_cleanly=False, stdout="", stderr=line, observation=line)


def reopen_session(sandbox, dead, calls: Sequence[ToolCall], timeout_s: float | None):
    """A new session in place of ``dead``, with the state of the trajectory's ``calls`` replayed (blocking)."""
    dead.close()
    session = sandbox.session()
    try:
        replay_calls(session, calls, timeout_s)
    except BaseException:
        session.close()
        raise
    return session


def replay_calls(session, calls: Sequence[ToolCall], timeout_s: float | None) -> None:
    """Run again, in order, the ``calls`` whose state the original session kept (``ToolCall.kept_state``: a
    silent cell failed by the kit's rule but its variables lived on), to give a new session that state (blocking)."""
    for call in calls:
        if call.kept_state:
            session.run(call.code, timeout_s)


def _answered(text: str) -> bool:
    return tir.last_boxed(text) is not None and not tir.in_open_code_block(text)


# Trajectories open at once by default. Each holds a sandbox session (a worker process) from its start to its
# end, so an uncapped 2,000-answer evaluation would hold 2,000 workers (what 200 answers at once cost on
# the cpu machine: docs/RL.md, "Noticed on the way"); 256 still fills a large engine batch.
MAX_IN_FLIGHT = 256


async def rollout_many(
    backend: Backend,
    sandbox,
    tasks: Sequence[RolloutTask],
    cfg: RolloutConfig,
    on_done: Callable[[int, Trajectory], None] | None = None,
    max_in_flight: int | None = MAX_IN_FLIGHT,
) -> list[Trajectory]:
    """All ``tasks``, at most ``max_in_flight`` open at once (None: all); results in task order.

    ``on_done(i, record)`` fires as each finishes.
    """
    gate = asyncio.Semaphore(max_in_flight) if max_in_flight else contextlib.nullcontext()

    async def one(i: int, task: RolloutTask) -> Trajectory:
        async with gate:
            record = await rollout_one(backend, sandbox, task, cfg)
        if on_done is not None:
            on_done(i, record)
        return record

    return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(tasks))))


def run_rollouts(
    backend: Backend,
    sandbox,
    tasks: Sequence[RolloutTask],
    cfg: RolloutConfig,
    progress: bool = True,
    on_done: Callable[[int, Trajectory], None] | None = None,
    max_in_flight: int | None = MAX_IN_FLIGHT,
) -> list[Trajectory]:
    """Blocking wrapper of ``rollout_many`` that also works inside Jupyter's running event loop.

    Checks the sandbox first when tools are on: a dead sandbox stops the run at
    once instead of turning every call into an error.
    """
    if cfg.tools:
        if sandbox is None:
            raise ValueError("tools are on (RolloutConfig.tools=True) but no sandbox was given")
        sandbox.health_check()
    bar = progress_bar(len(tasks), f"rollouts ({backend.name})", "traj", disable=not progress)

    def done(i: int, record: Trajectory) -> None:
        bar.update(1)
        if on_done is not None:
            on_done(i, record)

    try:
        return run_coroutine(rollout_many(backend, sandbox, tasks, cfg, done, max_in_flight))
    finally:
        bar.close()


def run_coroutine(coro):
    """Run ``coro`` to completion and return its result, from plain code or under a running loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}  # a loop is running (Jupyter): run ours on a thread of its own

    def target():
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
