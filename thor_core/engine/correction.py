"""Self-correction at inference (the paper's section 2.4): when a code call fails, back off and write it again.

The tool loop (``rollout.rollout_one``) asks :func:`wants_retry` after each executed call; on yes it cuts the
completion back to :func:`backtrack_to` (``L_suf`` tokens before the failed block, never into the prompt, a given
prefix or an inserted output block: the floor moves to the end of each), records the dropped text in a
``record.Correction`` and samples the suffix and the code again. At most ``N_corr`` retries per failing call
(``RolloutConfig.max_corrections``; the count restarts once an output is inserted, i.e. after a call that is kept,
successful or out of retries), each retry counting as a tool round. The paper uses N_corr = 4 and the authors' inference backtracks 500 tokens
(``RolloutConfig.correction_suffix_tokens``); docs/METHOD.md lists what the profiles use.

Not covered: correcting a wrong final answer without a failed call (the paper's method does not either).
"""

from __future__ import annotations

from typing import Protocol


class _Limits(Protocol):
    self_correction: bool
    max_corrections: int
    max_tool_rounds: int
    correction_suffix_tokens: int


def wants_retry(success: bool, cfg: _Limits, retries: int, rounds: int) -> bool:
    """A failed call is retried when self-correction is on, this call has had fewer than ``max_corrections``
    retries, and a tool round is left for the retry."""
    return not success and cfg.self_correction and retries < cfg.max_corrections and rounds < cfg.max_tool_rounds


def backtrack_to(code_start: int, floor: int, cfg: _Limits) -> int:
    """The completion token to cut back to: ``correction_suffix_tokens`` before the failed block's first token,
    never before ``floor`` (the end of the given prefix or of the last inserted output block)."""
    return max(floor, code_start - cfg.correction_suffix_tokens)
