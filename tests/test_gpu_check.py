"""benchmarks/gpu_check.py (``make gpu-check``) in its CPU form: the plumbing of every part, no GPU needed.

One run of the script as a user runs it (a subprocess, CUDA hidden), on the tiny random Qwen through the hf backend,
on the gpu-1.5b profile's files with small counts (G 4, no refill rounds): the evaluation's answers are exported as an SFT dataset, SFT takes
one step of the profile's 02 settings from them, and RL two steps of its 03 settings (40 updates per round) from
SFT's model, pushing the weights into the engine after each. The random model never solves a question, so RL's
groups have no reward spread and its update is skipped; the update under the profile's schedule is
tests/test_rl_trainer.py's. The table's rows and the exit status are checked; the GPU form is recorded in
docs/BENCHMARKS.md, "GPU check".
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from thor_core.files import REPO_ROOT
from thor_core.models import TINY_MODEL

pytestmark = pytest.mark.model


def test_the_gpu_check_runs_every_part_on_the_cpu(tmp_path):
    cmd = [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--backend", "hf", "--model", TINY_MODEL,
           "--answers", "4", "--tokens", "16", "--questions", "2", "--set", "03_rl.group_size=4",
           "--set", "03_rl.max_refill_rounds=0",
           "--out-dir", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "THOR_OUTPUTS": str(tmp_path / "outputs")}
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert rows["cuda-tests"].split("|")[2].strip() == "skipped"
    for part in ("evaluation", "sft", "rl"):
        assert rows[part].split("|")[2].strip() == "ok", rows[part]
    assert "4 answers" in rows["evaluation"] and "1 step of 4 examples" in rows["sft"]
    assert "from SFT; 2 questions x G 4, 40 updates per round" in rows["rl"]
    assert (tmp_path / "rl" / "final" / "config.json").is_file() and (tmp_path / "sft" / "final").is_dir()
