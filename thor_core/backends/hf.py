"""The transformers backend: continuous batching with each trajectory's KV cache kept.

Every trajectory owns a row of one batched KV cache for its whole life. When it
comes back after a tool call, only the new tokens (the inserted output block)
are fed; the context is never prefilled again. Rows advance in lockstep, one
token per decode step; a row that is waiting for its tool call, or that is
fed tokens instead of sampling, costs no extra forward pass.

How rows of different lengths share one cache: a cache *slot* may be a
*hole*, a position every query is masked from. Rows are left-padded with
holes when they join; a row that backtracks (self-correction, step-level RL)
turns the dropped slots into holes instead of copying its cache; a row waiting
for its coroutine gets a hole for each step it sits out. Positions (RoPE) are
passed explicitly per row, counting only real tokens, so a row with holes
computes exactly what the same tokens would compute without them.

Covered: full-attention decoder models (Qwen2, Llama, ...), sampling with
temperature/top-p/top-k and per-request seeds, raw log-probs of sampled tokens,
stop strings, weight loading between calls; the model on the GPU when torch
sees one (``from_model_name``'s device 'auto'; sampling itself runs on the CPU
from each step's logits with per-row CPU generators, so a seed gives the same
draws from the same logits on either device). Not covered: sliding-window or
hybrid caches (refused with a clear error), beam search.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from thor_core.backends.base import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    BatchingBackend,
    PendingRequest,
    Segment,
    SegmentRequest,
    ends_with_stop,
    eos_ids_of,
)
from thor_core.models import load_model_and_tokenizer


@dataclass
class _Row:
    key: str
    cached: list[int] = field(default_factory=list)  # tokens whose K/V sit in the cache, in order
    slots: list[int] = field(default_factory=list)  # cache slot of each cached token
    feed: list[int] = field(default_factory=list)  # context tokens still to feed, then sample
    job: PendingRequest | None = None
    out_ids: list[int] = field(default_factory=list)
    out_logprobs: list[float] = field(default_factory=list)
    generator: torch.Generator | None = None
    idle_steps: int = 0

    @property
    def context(self) -> list[int]:
        return self.cached + self.feed


class HFBackend(BatchingBackend):
    name = "hf"

    def __init__(self, model, tokenizer, max_batch: int = 16) -> None:
        types = set(getattr(model.config.get_text_config(), "layer_types", None) or ["full_attention"])
        if types != {"full_attention"} or getattr(model.config, "use_sliding_window", False):
            raise ValueError(
                f"the hf backend supports full-attention models only; this model has layer types {sorted(types)}. "
                "Use the vllm backend for it."
            )
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        configured_eos = model.generation_config.eos_token_id
        if configured_eos is None:
            configured_eos = []
        self.eos_token_ids = eos_ids_of(
            tokenizer, configured_eos if isinstance(configured_eos, list) else [configured_eos]
        )
        self.max_batch = max_batch
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.device = next(model.parameters()).device
        self._rows: list[_Row] = []
        self._cache = None
        self._valid = torch.zeros(0, 0, dtype=torch.bool)  # [rows, slots]: real token (True) or hole
        super().__init__()

    @classmethod
    def from_model_name(cls, name: str, dtype: str = "float32", max_batch: int = 16, device: str = "auto") -> HFBackend:
        """``device``: 'auto' is the GPU where torch sees one (CUDA), else the CPU; or any torch device name."""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model, tokenizer = load_model_and_tokenizer(name, dtype=dtype, device=device)
        return cls(model, tokenizer, max_batch=max_batch)

    # -- public extras ---------------------------------------------------
    def load_weights(self, named_tensors) -> None:
        """Copy new weights into the model and drop every cached row (their K/V are stale)."""

        def _load():
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, tensor in named_tensors:
                    if name not in params:
                        raise KeyError(f"load_weights: the model has no parameter {name!r}")
                    params[name].copy_(tensor)
            self._drop_parked_rows()

        self._call_on_worker(_load)

    @property
    def cache_slots(self) -> int:
        """Current cache length in slots (real tokens plus holes), for tests and stats."""
        return self._valid.shape[1]

    # -- BatchingBackend -------------------------------------------------
    def _has_work(self) -> bool:
        return any(r.job is not None for r in self._rows)

    def _release(self, key: str) -> None:
        keep = [i for i, r in enumerate(self._rows) if r.key != key or r.job is not None]
        if len(keep) != len(self._rows):
            self._select_rows(keep)

    def _fail_running(self, error: BaseException) -> None:
        for r in self._rows:
            if r.job is not None:
                r.job.resolve(error=error)
                r.job = None

    def _admit(self, pending: list[PendingRequest]) -> list[PendingRequest]:
        waiting, fresh = [], []
        for job in pending:
            row = next((r for r in self._rows if r.key == job.request.key and r.job is None and job.request.key), None)
            if row is not None:
                self._resume(row, job)
            elif len(self._rows) + len(fresh) < self.max_batch or self._evict_one_parked():
                fresh.append(job)
            else:
                waiting.append(job)
        if fresh:
            self._prefill(fresh)
        return waiting

    # -- rows ------------------------------------------------------------
    def _start_job(self, row: _Row, job: PendingRequest) -> None:
        row.job, row.out_ids, row.out_logprobs, row.idle_steps = job, [], [], 0
        seed = job.request.seed
        row.generator = None
        if seed is not None:
            row.generator = torch.Generator(device="cpu").manual_seed(seed)

    def _resume(self, row: _Row, job: PendingRequest) -> None:
        """Point a parked row at a new request: keep the common prefix, hole the rest."""
        ids = job.request.ids
        common = 0
        for a, b in zip(row.cached, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # the last context token must be fed to get its logits
        r = self._rows.index(row)
        for slot in row.slots[common:]:
            self._valid[r, slot] = False
        row.cached, row.slots = row.cached[:common], row.slots[:common]
        row.feed = list(ids[common:])
        self._start_job(row, job)

    def _evict_one_parked(self) -> bool:
        parked = [i for i, r in enumerate(self._rows) if r.job is None]
        if not parked:
            return False
        oldest = max(parked, key=lambda i: self._rows[i].idle_steps)
        self._select_rows([i for i in range(len(self._rows)) if i != oldest])
        return True

    def _drop_parked_rows(self) -> None:
        self._select_rows([i for i, r in enumerate(self._rows) if r.job is not None])

    def _select_rows(self, keep: list[int]) -> None:
        self._rows = [self._rows[i] for i in keep]
        if not self._rows:
            self._cache, self._valid = None, torch.zeros(0, 0, dtype=torch.bool)
            return
        index = torch.tensor(keep, dtype=torch.long)
        self._cache.batch_select_indices(index.to(self.device))
        self._valid = self._valid[index]
        self._trim_leading_holes()

    def _trim_leading_holes(self) -> None:
        """Drop cache columns that are holes in every row."""
        if self._valid.numel() == 0:
            return
        any_valid = self._valid.any(dim=0)
        if not any_valid.any():
            return
        first = int(any_valid.nonzero()[0])
        if first == 0:
            return
        for layer in self._cache.layers:
            layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]
        self._valid = self._valid[:, first:]
        for row in self._rows:
            row.slots = [s - first for s in row.slots]

    # -- model calls -----------------------------------------------------
    @torch.no_grad()
    def _prefill(self, jobs: list[PendingRequest]) -> None:
        """Run new requests' prompts in one left-padded forward and merge them into the batch."""
        from transformers import DynamicCache

        lengths = [len(j.request.ids) for j in jobs]
        width = max(lengths)
        input_ids = torch.full((len(jobs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(jobs), width, dtype=torch.bool)
        for i, job in enumerate(jobs):
            input_ids[i, width - lengths[i] :] = torch.tensor(job.request.ids)
            mask[i, width - lengths[i] :] = True
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.long().to(self.device),
            position_ids=positions.to(self.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        new_rows = []
        for i, job in enumerate(jobs):
            row = _Row(key=job.request.key, cached=list(job.request.ids), slots=list(range(width - lengths[i], width)))
            self._start_job(row, job)
            new_rows.append(row)
        self._merge(new_rows, cache, mask)
        logits = out.logits[:, -1, :].float().cpu()
        for i, row in enumerate(new_rows):
            self._after_logits(row, logits[i])
        self._drop_anonymous_parked()

    def _drop_anonymous_parked(self) -> None:
        """Rows of key-less requests cannot be resumed: free them as soon as they finish."""
        if any(r.job is None and not r.key for r in self._rows):
            self._select_rows([i for i, r in enumerate(self._rows) if r.job is not None or r.key])

    def _merge(self, rows: list[_Row], cache, valid: torch.Tensor) -> None:
        """Append prefilled rows to the batch, left-padding whichever side is shorter with holes."""
        if not self._rows:
            self._rows, self._cache, self._valid = rows, cache, valid
            return
        old, new = self._valid.shape[1], valid.shape[1]
        width = max(old, new)
        for main_layer, new_layer in zip(self._cache.layers, cache.layers, strict=True):
            main_layer.keys = _left_pad(main_layer.keys, width - old)
            main_layer.values = _left_pad(main_layer.values, width - old)
            main_layer.keys = torch.cat([main_layer.keys, _left_pad(new_layer.keys, width - new)], dim=0)
            main_layer.values = torch.cat([main_layer.values, _left_pad(new_layer.values, width - new)], dim=0)
        pad_old = torch.zeros(self._valid.shape[0], width - old, dtype=torch.bool)
        pad_new = torch.zeros(valid.shape[0], width - new, dtype=torch.bool)
        self._valid = torch.cat([torch.cat([pad_old, self._valid], 1), torch.cat([pad_new, valid], 1)], 0)
        for row in self._rows:
            row.slots = [s + width - old for s in row.slots]
        for row in rows:
            row.slots = [s + width - new for s in row.slots]
        self._rows.extend(rows)

    @torch.no_grad()
    def _step(self) -> None:
        """Feed one token per row (a hole for rows without a job) and sample where due."""
        n, slot = len(self._rows), self._valid.shape[1]
        tokens = torch.full((n, 1), self.pad_id, dtype=torch.long)
        positions = torch.zeros(n, 1, dtype=torch.long)
        fed = torch.zeros(n, 1, dtype=torch.bool)
        for i, row in enumerate(self._rows):
            if row.job is None:
                row.idle_steps += 1
                continue
            tokens[i, 0] = row.feed[0]
            positions[i, 0] = len(row.cached)
            fed[i, 0] = True
        self._valid = torch.cat([self._valid, fed], dim=1)
        out = self.model(
            input_ids=tokens.to(self.device),
            attention_mask=self._valid.long().to(self.device),
            position_ids=positions.to(self.device),
            past_key_values=self._cache,
            cache_position=torch.tensor([slot], device=self.device),
            use_cache=True,
        )
        logits = out.logits[:, -1, :].float().cpu()
        for i, row in enumerate(self._rows):
            if row.job is None:
                continue
            row.cached.append(row.feed.pop(0))
            row.slots.append(slot)
            if not row.feed:
                self._after_logits(row, logits[i])
        self._drop_anonymous_parked()

    def _after_logits(self, row: _Row, logits: torch.Tensor) -> None:
        """Sample the row's next token; finish its segment on EOS, a stop string or its budget."""
        request: SegmentRequest = row.job.request
        token = _sample(logits, request, row.generator)
        row.out_ids.append(token)
        row.out_logprobs.append(float(torch.log_softmax(logits, -1)[token]))
        row.feed = [token]
        finish = None
        if token in self.eos_token_ids:
            finish = FINISH_EOS
        elif ends_with_stop(self.tokenizer, row.out_ids, request.stop):
            finish = FINISH_STOP
        elif len(row.out_ids) >= request.max_new_tokens:
            finish = FINISH_LENGTH
        if finish is not None:
            row.job.resolve(Segment(ids=row.out_ids, logprobs=row.out_logprobs, finish=finish))
            row.job = None


def _left_pad(t: torch.Tensor, n: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[-2] = n
    return torch.cat([t.new_zeros(shape), t], dim=-2)


def _sample(logits: torch.Tensor, request: SegmentRequest, generator: torch.Generator | None) -> int:
    params = request.sampling
    if params.temperature == 0:
        return int(torch.argmax(logits))
    scores = logits / params.temperature
    if params.top_k:
        kth = torch.topk(scores, min(params.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(sorted_scores, -1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_scores, -1) > params.top_p  # keep the token that crosses top_p
        scores = scores.scatter(0, order[drop], float("-inf"))
    probs = torch.softmax(scores, -1)
    return int(torch.multinomial(probs, 1, generator=generator))
