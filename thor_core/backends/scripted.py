"""A scripted policy: a deterministic token stream for tests and pipeline dry runs.

``respond(context_text) -> continuation_text`` plays the model: it sees the
decoded context (prompt + completion so far) and returns what the "model"
writes next. The continuation is tokenised with the real tokenizer and
streamed token by token under the same rules as a real backend: it stops after
the token that completes a stop string, at an EOS token, or at the budget.
Log-probs are reported as a fixed value so their plumbing can be checked.

Covered: everything the rollout loop needs from a backend. Not covered:
sampling (the stream is fixed), batching.
"""

from __future__ import annotations

from collections.abc import Callable

from thor_core.backends.base import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    Backend,
    Segment,
    SegmentRequest,
    ends_with_stop,
    eos_ids_of,
)

SCRIPTED_LOGPROB = -0.25


class ScriptedBackend(Backend):
    name = "scripted"

    def __init__(self, tokenizer, respond: Callable[[str], str]) -> None:
        self.tokenizer = tokenizer
        self.respond = respond
        self.eos_token_ids = eos_ids_of(tokenizer)
        self.requests: list[SegmentRequest] = []  # every request seen, for assertions
        self.weight_loads = 0  # RL weight pushes seen (the stream does not depend on weights)

    def load_weights(self, named_tensors) -> None:
        for _ in named_tensors:
            pass
        self.weight_loads += 1

    async def generate(self, request: SegmentRequest) -> Segment:
        self.requests.append(request)
        context = self.tokenizer.decode(request.ids, skip_special_tokens=False)
        stream = self.tokenizer.encode(self.respond(context), add_special_tokens=False)
        if not stream:
            raise ValueError("the scripted policy returned no text for this context")
        out: list[int] = []
        for token in stream:
            out.append(token)
            if token in self.eos_token_ids:
                return Segment(out, [SCRIPTED_LOGPROB] * len(out), FINISH_EOS)
            if ends_with_stop(self.tokenizer, out, request.stop):
                return Segment(out, [SCRIPTED_LOGPROB] * len(out), FINISH_STOP)
            if len(out) >= request.max_new_tokens:
                return Segment(out, [SCRIPTED_LOGPROB] * len(out), FINISH_LENGTH)
        return Segment(out, [SCRIPTED_LOGPROB] * len(out), FINISH_LENGTH)
