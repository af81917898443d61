"""``python -m thor_core.demo``: stages in order, a line each, done stages skipped, REPORT.md, no kernel noise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from thor_core.runs import REPO_ROOT

pytestmark = pytest.mark.notebook


def test_the_demo_runs_a_stage_skips_it_when_done_and_writes_the_report(tmp_path):
    env = {**os.environ, "THOR_OUTPUTS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "thor_core.demo", "--profile", "smoke", "--stages", "03_rl-cot", "05_analysis_figures"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout + done.stderr
    assert "[1/2] 03_rl-cot: no profile" in out and "[2/2] 05_analysis_figures: ok" in out
    assert "without encryption" not in out and "Executing Cell" not in out and "\n\n\n" not in out
    report = (tmp_path / "smoke" / "REPORT.md").read_text()
    assert "| 05_analysis_figures | ok |" in report and "ladder" in report.lower()
    assert "![ladder](05_analysis_figures/ladder.png)" in report  # the key figures, linked relative to the report
    assert (tmp_path / "smoke" / "05_analysis_figures" / "manifest.json").exists()
    again = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "05_analysis_figures: done before" in again.stdout
