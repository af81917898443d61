"""The small interface every generation backend implements.

A backend turns one ``SegmentRequest`` (the full context as token ids, a token
budget, stop strings, sampling settings) into one ``Segment`` (the sampled ids,
their log-probs, why it stopped). The rollout loop (``thor_core.engine.rollout``)
calls ``await backend.generate(request)`` from one coroutine per trajectory, so
trajectories advance independently: a trajectory waiting for its tool call
never stalls the others.

``BatchingBackend`` is the shared machinery for engines that decode in
batches (transformers, vLLM): a worker thread owns the model, collects the
requests of all waiting coroutines between decode steps (continuous batching),
and resolves each request's future as soon as its segment ends.

Not covered here: the tool loop, masks and spans (``thor_core.engine.rollout``).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is the backends' business: importing this interface must not load it
    import torch

FINISH_EOS = "eos"
FINISH_STOP = "stop"  # a stop string appeared in the segment
FINISH_LENGTH = "length"


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; the defaults are the paper's evaluation settings (temperature 0.6)."""

    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = 0  # 0 = off

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")


GREEDY = SamplingParams(temperature=0.0)


@dataclass
class SegmentRequest:
    ids: list[int]  # the whole context: prompt + completion so far
    max_new_tokens: int
    stop: tuple[str, ...] = ()  # stop once the segment's text contains one of these
    sampling: SamplingParams = field(default_factory=SamplingParams)
    seed: int | None = None
    key: str = ""  # trajectory identity: lets a backend reuse that trajectory's cache


@dataclass
class Segment:
    ids: list[int]
    logprobs: list[float] | None
    finish: str  # FINISH_EOS | FINISH_STOP | FINISH_LENGTH


class Backend(ABC):
    """Generation over token ids. Subclasses set ``tokenizer`` and ``eos_token_ids``."""

    tokenizer = None
    eos_token_ids: frozenset[int] = frozenset()
    name: str = "backend"

    @abstractmethod
    async def generate(self, request: SegmentRequest) -> Segment: ...

    def release(self, key: str) -> None:
        """The trajectory ``key`` is finished: its cached state may be dropped."""

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the policy weights (RL updates). Backends that cannot say so."""
        raise NotImplementedError(f"the {self.name} backend cannot load new weights")

    def close(self) -> None:
        """Free the model and worker threads."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


STOP_WINDOW_TOKENS = 16  # stop strings are short: only the tail of a segment is decoded to find them


def ends_with_stop(tokenizer, ids: list[int], stops: Iterable[str]) -> bool:
    """Whether the tail of ``ids`` contains one of the stop strings (checked after each new token)."""
    if not stops:
        return False
    tail = tokenizer.decode(ids[-STOP_WINDOW_TOKENS:], skip_special_tokens=False)
    return any(s in tail for s in stops)


def end_before_eos(ids: list[int], eos_ids: Iterable[int]) -> int:
    """Length of ``ids`` without its trailing end-of-sequence tokens."""
    eos, end = frozenset(eos_ids), len(ids)
    while end > 0 and ids[end - 1] in eos:
        end -= 1
    return end


def eos_ids_of(tokenizer, extra: Iterable[int] = ()) -> frozenset[int]:
    """End-of-sequence ids: the tokenizer's EOS plus chat end-of-turn markers it defines."""
    ids = set(extra)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return frozenset(ids)


@dataclass
class PendingRequest:
    request: SegmentRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop

    def resolve(self, segment: Segment | None = None, error: BaseException | None = None) -> None:
        def _set() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(segment)

        self.loop.call_soon_threadsafe(_set)


class BatchingBackend(Backend):
    """A worker thread that decodes all waiting requests together.

    Subclasses implement ``_admit`` (take new requests into the running batch),
    ``_step`` (advance the batch by one decode step, resolving finished
    requests), ``_release`` and ``_has_work``. All model access happens on the
    worker thread, so subclasses need no locks of their own.
    """

    def __init__(self) -> None:
        self._inbox: queue.Queue = queue.Queue()
        self._closed = False
        self._error: BaseException | None = None
        self._worker = threading.Thread(target=self._serve, name=f"{self.name}-worker", daemon=True)
        self._worker.start()

    async def generate(self, request: SegmentRequest) -> Segment:
        if self._error is not None:
            raise RuntimeError(f"the {self.name} backend's worker died") from self._error
        if self._closed:
            raise RuntimeError(f"the {self.name} backend is closed")
        if request.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {request.max_new_tokens}")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._inbox.put(("generate", PendingRequest(request, future, loop)))
        return await future

    def release(self, key: str) -> None:
        self._inbox.put(("release", key))

    def _call_on_worker(self, fn, *args):
        """Run ``fn(*args)`` on the worker thread between steps and wait for it."""
        done = threading.Event()
        box: dict = {}

        def task():
            try:
                box["result"] = fn(*args)
            except BaseException as e:  # handed back to the caller
                box["error"] = e
            finally:
                done.set()

        self._inbox.put(("call", task))
        while not done.wait(timeout=1.0):
            if not self._worker.is_alive():
                raise RuntimeError(f"the {self.name} backend's worker is not running") from self._error
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.put(("stop", None))
            self._worker.join(timeout=30)

    # -- worker thread ---------------------------------------------------
    def _serve(self) -> None:
        pending: list[PendingRequest] = []
        try:
            while True:
                block = not pending and not self._has_work()
                while True:
                    try:
                        kind, item = self._inbox.get(block=block, timeout=None)
                    except queue.Empty:
                        break
                    block = False
                    if kind == "stop":
                        closed = RuntimeError(f"the {self.name} backend was closed")
                        self._fail_all(pending, closed)
                        self._fail_running(closed)
                        return
                    if kind == "generate":
                        pending.append(item)
                    elif kind == "release":
                        self._release(item)
                    elif kind == "call":
                        item()
                if pending:
                    pending = self._admit(pending)
                if self._has_work():
                    self._step()
        except BaseException as e:  # a model error must reach every waiting coroutine
            self._error = e
            self._fail_all(pending, e)
            self._fail_running(e)
            raise

    @staticmethod
    def _fail_all(pending: list[PendingRequest], error: BaseException) -> None:
        for p in pending:
            p.resolve(error=error)

    @abstractmethod
    def _admit(self, pending: list[PendingRequest]) -> list[PendingRequest]:
        """Start as many pending requests as fit; return the ones left waiting."""

    @abstractmethod
    def _step(self) -> None: ...

    @abstractmethod
    def _has_work(self) -> bool: ...

    @abstractmethod
    def _release(self, key: str) -> None: ...

    @abstractmethod
    def _fail_running(self, error: BaseException) -> None: ...


def release_freed_memory() -> None:
    """Collect garbage and hand the C allocator's free pages back to the system (glibc's ``malloc_trim``).

    An engine's weights and KV cache are freed on close, but glibc keeps much of it in the closing thread's arena,
    where the next engine (built on another thread) does not reuse it: notebook 03 held gigabytes after training that
    way (docs/BENCHMARKS.md, "Where an fp32 engine's memory goes"). Elsewhere than glibc this only collects garbage.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
