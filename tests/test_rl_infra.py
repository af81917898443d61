"""The trainer's infrastructure rule (Trainer._check_infrastructure) with the real sandbox.

A step whose calls time out beyond ``infra_failure_limit`` re-runs the timed-out calls alone: calls that time out
again are the model's slow code (training goes on), calls that now finish were the sandbox's fault (the run stops).
The rule is called on a stand-in ``self`` (params and the main-process flag only), so no model is loaded.
"""

from collections import Counter
from types import SimpleNamespace

import pytest
from rl_scripted import trajectory_from_pieces

from thor_core.rl.config import RLParams
from thor_core.rl.trainer import InfrastructureFailure, Trainer


def _timed_out(tok, *calls):
    """A trajectory whose last code block timed out; earlier blocks ran ("ok"), their state carries over."""
    pieces = []
    for code in calls:
        pieces += [
            ("Let me compute.\n", "policy"),
            (f"```python\n{code}\n```\n", "ok"),
            ("```output\n\n```\n", "output"),
        ]
    record = trajectory_from_pieces(tok, pieces)
    record.tool_calls[-1].success, record.tool_calls[-1].timed_out = False, True
    return record


def _check(records, sandbox, limit=0.5):
    counts = Counter()
    self = SimpleNamespace(
        p=RLParams(code_timeout_s=1.0, infra_failure_limit=limit), acc=SimpleNamespace(is_main_process=True)
    )
    Trainer._check_infrastructure(self, records, sandbox, counts)
    return counts


def test_timeouts_of_the_models_own_slow_code_do_not_stop_the_run(qwen_tokenizer, sandbox, capsys):
    # the second record's loop depends on state from its first call: a re-run without that state would end in a
    # NameError at once and be blamed on the sandbox, so this also checks that the earlier calls are replayed
    records = [
        _timed_out(qwen_tokenizer, "while True:\n    pass"),
        _timed_out(qwen_tokenizer, "slow = True", "while slow:\n    pass"),
    ]
    counts = _check(records, sandbox)
    assert counts == Counter(timeouts_rerun=2, timeouts_rerun_finished=0)
    assert "2 of 3 code calls timed out" in capsys.readouterr().out


def test_timeouts_that_finish_when_run_alone_stop_the_run(qwen_tokenizer, sandbox):
    records = [_timed_out(qwen_tokenizer, "print(1)") for _ in range(3)] + [
        _timed_out(qwen_tokenizer, "while True:\n    pass")
    ]
    with pytest.raises(
        InfrastructureFailure, match=r"4 of 4 code calls timed out.*3 of 4 finished in time.*the sandbox, not the model"
    ):
        _check(records, sandbox)


def test_timeouts_within_the_limit_are_not_re_run(qwen_tokenizer, sandbox):
    records = [_timed_out(qwen_tokenizer, "x = 1", "print(1)")]  # 1 of 2 calls: 50%, not above the limit
    assert _check(records, sandbox) == Counter()
