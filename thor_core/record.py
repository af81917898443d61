"""The trajectory record: the one type that flows through the whole pipeline.

TIRGen writes it, SFT reads it, RL produces it, evaluation grades it, figures
read the graded files. It carries everything the engine already knew, so no
later stage re-parses rendered text:

- ``prompt_ids`` and ``completion_ids``: the exact token ids the model was
  conditioned on and produced (decoding them reproduces the trajectory text);
- ``mask``: one entry per completion token, 1 if the policy sampled it, 0 if it
  was inserted (tool output blocks);
- ``logprobs``: per completion token, the sampling policy's log-prob (None for
  inserted tokens), when the backend reports them;
- ``tool_calls``: each call's code, result and token spans (half-open
  ``[start, end)`` indices into ``completion_ids``);
- ``corrections``: what self-correction threw away (for analysis only; the
  ids hold only the kept path);
- ``token_sources`` (optional, TIRGen records): one character per completion
  token saying who wrote it: ``a`` the actor (the policy), ``c`` the critic,
  ``t`` a tool output block the kit inserted. SFT trains on ``a`` and ``c``
  and may mask ``t``; analysis can tell who wrote what. None elsewhere.
- ``trainer_logprobs`` and ``entropy`` (optional, RL samples of rows the update
  trained on): per completion token, the trainer's log-prob (under the weights
  that sampled, so ``logprobs - trainer_logprobs`` is the engine/trainer
  mismatch) and the entropy of its sampling distribution, both from the
  update's own forward pass. In memory lists of floats; in JSON base64 strings
  of little-endian float32 (log-probs: a mismatch of 0.001 nats must survive
  at -20) and float16 (entropy, shown only), 8 characters a token in all
  (``pack_floats``).

Covered: JSONL (append-safe, resumable) round trips.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thor_core.files import iter_json_lines

FINISH_REASONS = ("eos", "answer", "length", "max_tool_rounds", "step", "code_executed", "failed_call")
TOKEN_SOURCES = {"a": "actor", "c": "critic", "t": "tool output"}
# |engine - trainer| log-prob (nats) past which a token counts as mismatched (RL's metric, the viewer's flag):
# a probability ratio of e^0.5 = 1.65 (or 0.61), outside the clip range 1 - 0.2 .. 1 + 0.28 by itself, so such a
# token's update follows the numerics rather than the policy; the cpu run of docs/RL.md measured mean |difference|
# 0.003-0.006 with a maximum of 0.18-0.84 a step, so 0.5 flags the tail only.
MISMATCH_THRESHOLD = 0.5
# per-token float arrays of a record and their storage type in JSON (struct format: f float32, e float16)
PACKED_FLOATS = {"trainer_logprobs": "f", "entropy": "e"}


def pack_floats(values: list[float], kind: str) -> str:
    """``values`` as base64 of little-endian ``kind`` (struct: ``f`` float32, ``e`` float16); NaN kept."""
    return base64.b64encode(struct.pack(f"<{len(values)}{kind}", *values)).decode("ascii")


def unpack_floats(text: str, kind: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // struct.calcsize(kind)}{kind}", raw))


@dataclass
class ToolCall:
    """One executed code block and its result.

    ``code_span`` covers the policy tokens of the ```python block (fences
    included); ``output_span`` the inserted ```output block tokens (empty when
    the output was not inserted, e.g. a failed call that self-correction
    retried). ``exited_cleanly``: the code ran to its end, so the session kept
    its state, even when the call failed by the kit's rule (it printed nothing);
    None in records from before the field (read as ``success``).
    """

    code: str
    success: bool
    observation: str
    code_span: tuple[int, int]
    output_span: tuple[int, int]
    timed_out: bool = False
    duration_s: float = 0.0
    exited_cleanly: bool | None = None

    @property
    def kept_state(self) -> bool:
        """Whether the session kept what this call did (a failed cell is rolled back; a silent one is not)."""
        return self.success if self.exited_cleanly is None else self.exited_cleanly

    def __post_init__(self) -> None:
        self.code_span = tuple(self.code_span)
        self.output_span = tuple(self.output_span)


@dataclass
class Correction:
    """A failed call that self-correction backtracked over (kept for analysis)."""

    at_token: int  # completion index where the dropped text started
    dropped_text: str  # reasoning suffix + code that were regenerated
    code: str
    observation: str


@dataclass
class Trajectory:
    question_id: str
    question: str
    gold_answer: str | None
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float | None] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    completion_text: str = ""
    final_answer: str | None = None
    correct: bool | None = None
    finish_reason: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    token_sources: str | None = None  # one of TOKEN_SOURCES per completion token (TIRGen records)
    trainer_logprobs: list[float] | None = None  # RL samples: the trainer's log-prob per completion token
    entropy: list[float] | None = None  # RL samples: the trainer's entropy per completion token

    def __post_init__(self) -> None:
        self.tool_calls = [c if isinstance(c, ToolCall) else ToolCall(**c) for c in self.tool_calls]
        self.corrections = [c if isinstance(c, Correction) else Correction(**c) for c in self.corrections]
        for name, kind in PACKED_FLOATS.items():
            if isinstance(getattr(self, name), str):  # as read from JSON
                setattr(self, name, unpack_floats(getattr(self, name), kind))
        self.validate()

    def validate(self) -> None:
        """Check the invariants every stage relies on; raise ValueError naming the broken one."""
        n = len(self.completion_ids)
        if len(self.mask) != n:
            raise ValueError(f"trajectory {self.question_id!r}: mask has {len(self.mask)} entries for {n} tokens")
        for name in ("logprobs", *PACKED_FLOATS):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"trajectory {self.question_id!r}: {name} has {len(values)} entries for {n} tokens")
        if any(m not in (0, 1) for m in self.mask):
            raise ValueError(f"trajectory {self.question_id!r}: mask entries must be 0 or 1")
        if self.token_sources is not None:
            if len(self.token_sources) != n:
                raise ValueError(
                    f"trajectory {self.question_id!r}: token_sources has {len(self.token_sources)} entries for {n} tokens"
                )
            if bad := set(self.token_sources) - set(TOKEN_SOURCES):
                raise ValueError(
                    f"trajectory {self.question_id!r}: token_sources holds {sorted(bad)}; allowed: {TOKEN_SOURCES}"
                )
        for call in self.tool_calls:
            for name in ("code_span", "output_span"):
                start, end = getattr(call, name)
                if not 0 <= start <= end <= n:
                    raise ValueError(f"trajectory {self.question_id!r}: {name} {start, end} outside 0..{n}")
        if self.finish_reason and self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, got {self.finish_reason!r}")

    # -- derived views ---------------------------------------------------
    @property
    def n_calls(self) -> int:
        return len(self.tool_calls)

    @property
    def n_failed_calls(self) -> int:
        return sum(not c.success for c in self.tool_calls)

    @property
    def all_calls_succeeded(self) -> bool:
        return all(c.success for c in self.tool_calls)

    @property
    def n_policy_tokens(self) -> int:
        return sum(self.mask)

    def text(self, tokenizer) -> str:
        """The completion as the model saw it, decoded from the ids."""
        return tokenizer.decode(self.completion_ids, skip_special_tokens=False)

    # -- serialisation ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tool_calls"] = [
            {**c, "code_span": list(c["code_span"]), "output_span": list(c["output_span"])} for c in d["tool_calls"]
        ]
        for name, kind in PACKED_FLOATS.items():
            if d[name] is not None:
                d[name] = pack_floats(d[name], kind)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown trajectory fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


def write_jsonl(records: Iterable[Trajectory], path: str | os.PathLike, append: bool = False) -> None:
    """Write records one JSON line each; each line is flushed so a kill loses at most one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
            f.flush()


def read_jsonl(path: str | os.PathLike) -> list[Trajectory]:
    return list(iter_jsonl(path))


def iter_jsonl(path: str | os.PathLike) -> Iterator[Trajectory]:
    """Read records; a torn last line (a killed writer) is skipped, a torn middle line is an error."""
    for d in iter_json_lines(path):
        yield Trajectory.from_dict(d)
