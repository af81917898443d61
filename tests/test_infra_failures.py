"""Infrastructure failures out of the baselines: a sandbox fault injected into a real rollout group.

One episode group of 4 rollouts through the real engine and sandbox (a scripted token stream plays the model): a
right answer, a wrong one, one whose cell is SIGKILLed from outside while it runs (what a host's OOM killer or a
dying worker does; the cell names its process so the killer finds it), and one whose own code crashes its process
(a segfault). The trainer's re-run rule (``Trainer._check_infrastructure``, called on a stand-in ``self``: params
only, no model) runs both failed calls again alone: the killed one now finishes (the sandbox's fault), the crash
crashes again (the model's). The sandbox's failure leaves its group, counted, and the rest of the group keeps the
advantages it has without it; the model's crash stays in, scored 0.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections import Counter
from types import SimpleNamespace

import psutil
import pytest
import torch

from thor_core.backends.scripted import ScriptedBackend
from thor_core.engine.rollout import RolloutTask, rollout_config, run_rollouts
from thor_core.rl import batch as rb
from thor_core.rl import run as rr
from thor_core.rl.config import RLParams
from thor_core.rl.losses import group_advantages
from thor_core.rl.trainer import Trainer

VICTIM = "thor-victim"
CODE = {
    0: "print(2 + 2)",
    1: "print(2 + 3)",
    2: f'import ctypes, time\nctypes.CDLL(None).prctl(15, b"{VICTIM}", 0, 0, 0)\ntime.sleep(2)\nprint(2 + 2)',
    3: "import ctypes\nctypes.string_at(0)",  # the model's own crash: SIGSEGV, every time
}


def respond(context: str) -> str:
    k = int(re.findall(r"\(sample (\d)\)", context)[-1])
    reply = context.rsplit("<|im_start|>assistant", 1)[-1]
    if "```output" in reply:
        value = re.findall(r"```output\n(.*?)\n```", reply, re.S)[-1].strip()
        return f"So the answer is \\boxed{{{value}}}.<|im_end|>"
    return f"Let me compute it.\n```python\n{CODE[k]}\n```\n"


def _kill_once(stop: threading.Event) -> None:
    """SIGKILL the first process named ``VICTIM`` (the cell), once."""
    while not stop.is_set():
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] == VICTIM:
                proc.send_signal(signal.SIGKILL)
                return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def group(qwen_tokenizer, sandbox):
    tasks = []
    for k in range(4):
        question = f"Compute 2 + 2. (sample {k})"
        prompt = qwen_tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                    add_generation_prompt=True)  # fmt: skip
        tasks.append(RolloutTask(question_id="q", question=question, gold_answer="4",
                                 prompt_ids=qwen_tokenizer.encode(prompt, add_special_tokens=False),
                                 metadata={"group": "g", "rl_level": "episode", "sample": k}))  # fmt: skip
    p = RLParams(exclude_failed_code=False, code_timeout_s=5.0)
    cfg = rollout_config(p, max_new_tokens=200, max_tool_rounds=2, stop_at_failed_call=True)
    stop = threading.Event()
    killer = threading.Thread(target=_kill_once, args=(stop,))
    killer.start()
    try:
        records = run_rollouts(ScriptedBackend(qwen_tokenizer, respond), sandbox, tasks, cfg, progress=False)
    finally:
        stop.set()
        killer.join()
    assert records[2].tool_calls[0].observation == "Error: the cell's process was killed by signal SIGKILL"
    assert records[3].tool_calls[0].observation == "Error: the cell's process was killed by signal SIGSEGV"
    counts = Counter()
    Trainer._check_infrastructure(
        SimpleNamespace(p=p, acc=SimpleNamespace(is_main_process=True)), records, sandbox, counts
    )
    rewards = [float(r.final_answer == "4") for r in records]
    for r, reward in zip(records, rewards):
        r.metadata["reward"] = reward
    return records, rewards, p, counts


def test_the_re_run_rule_tells_the_sandboxs_fault_from_the_models(group):
    records, rewards, _, counts = group
    assert [r.metadata.get("infra_failure") for r in records] == [None, None, 0, None]
    assert counts == Counter(sandbox_faults_rerun=2)
    assert rewards == [1.0, 0.0, 0.0, 0.0]  # as scored before: the killed rollout ended without an answer


def test_an_infrastructure_failure_leaves_its_group_and_the_rest_keep_their_advantages(group, qwen_tokenizer):
    records, rewards, p, _ = group
    rows, counts = rb.episode_rows(records, rewards, p, qwen_tokenizer)
    assert [r.record.metadata["sample"] for r in rows] == [0, 1, 3] and counts["rollouts_dropped/infra"] == 1
    kept, _ = rb.with_advantages(rows)
    alone = group_advantages(torch.tensor([1.0, 0.0, 0.0]), torch.zeros(3, dtype=torch.long), 1e-6)
    assert [r.advantage for r in kept] == pytest.approx(alone.tolist())  # the group without it, exactly
    scored_zero = group_advantages(torch.tensor(rewards), torch.zeros(4, dtype=torch.long), 1e-6)[[0, 1, 3]]
    assert not torch.allclose(scored_zero, alone)  # what a "fake zero" would have done to the others
    assert records[2].metadata["rl_dropped"] == "infra" and "advantage" not in records[2].metadata
    metrics = rr.batch_metrics(records, [], kept, counts, Counter(), qwen_tokenizer)
    assert metrics["infra_dropped"] == 1 and metrics["count/rollouts_dropped/infra"] == 1
    # no step-level prefix at the sandbox's failure; the model's crash is one
    picks = rb.step_prefixes(records, RLParams(step_fallback=False), None)
    assert [(r.metadata["sample"], i) for r, i in picks] == [(3, 0)]


def test_a_group_left_too_small_is_dropped(group, qwen_tokenizer):
    records, rewards, p, _ = group
    rows, counts = rb.episode_rows(records[1:3], rewards[1:3], p, qwen_tokenizer)  # 1 of 2 left
    assert rows == [] and counts == Counter({"rollouts_dropped/infra": 1, "groups_dropped/survival": 1})
    # the step level: continuations of one prefix, the killed one among them
    steps = [type(r)(**{**r.to_dict(), "metadata": {**r.metadata, "group": "s/g/0/0", "loss_start": 0,
                                                      "prefix_calls": 0}}) for r in records]  # fmt: skip
    rows, counts = rb.step_level_rows(steps, p)
    assert [r.record.metadata["sample"] for r in rows] == [0, 1, 3] and counts == Counter({"rollouts_dropped/infra": 1})
    rows, counts = rb.step_level_rows(steps[1:3], p)
    assert rows == [] and counts == Counter({"rollouts_dropped/infra": 1, "step_groups_dropped/survival": 1})
