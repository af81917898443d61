"""``python -m thor_core.demo``: stages in order, a line each, done stages skipped, REPORT.md, no kernel noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from thor_core.files import REPO_ROOT
from thor_core.models import model_hash
from thor_core.runs import provenance

pytestmark = pytest.mark.notebook


def test_the_demo_runs_a_stage_skips_it_when_done_and_writes_the_report(tmp_path):
    env = {**os.environ, "THOR_OUTPUTS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "thor_core.demo", "--profile", "smoke", "--stages", "03_rl-cot", "05_analysis_figures"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout + done.stderr
    assert "[1/2] 03_rl-cot: no profile" in out and "[2/2] 05_analysis_figures: ok" in out
    assert "without encryption" not in out and "Executing Cell" not in out and "\n\n\n" not in out
    assert "<IPython.core.display" not in out and "Input Notebook:" not in out  # papermill's lines: run.log
    assert "Input Notebook:" in (tmp_path / "smoke" / "05_analysis_figures" / "run.log").read_text()
    report = (tmp_path / "smoke" / "REPORT.md").read_text()
    assert "| 05_analysis_figures | ok |" in report and "ladder" in report.lower()
    assert "![ladder](05_analysis_figures/ladder.png)" in report  # the key figures, linked relative to the report
    assert (
        "- [manifest.json](05_analysis_figures/manifest.json)" in report
        and str(tmp_path) not in report.split("## 05")[1]
    )
    assert (tmp_path / "smoke" / "05_analysis_figures" / "manifest.json").exists()
    again = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "05_analysis_figures: done before" in again.stdout


@pytest.mark.model
def test_make_smoke_runs_the_whole_chain_01_to_05(smoke_chain):
    """What `make smoke` runs (conftest's session chain): each stage reads the one before (01's export -> 02 -> 03 ->
    04's rungs -> 05)."""
    smoke_chain.check()
    done = smoke_chain.done
    for i, (stage, status) in enumerate((("01_tirgen", "ok"), ("02_sft", "ok"), ("03_rl", "ok"),
                                         ("03_rl-episode", "no profile"), ("03_rl-cot", "no profile"),
                                         ("04_correction_inference", "ok"), ("05_analysis_figures", "ok")), 1):  # fmt: skip
        assert f"[{i}/7] {stage}: {status}" in done.stdout
    root = smoke_chain.root
    manifest = {s: json.loads((root / s / "manifest.json").read_text()) for s in ("02_sft", "03_rl", "04_correction_inference")}  # fmt: skip
    export = provenance.dataset_hash(root / "01_tirgen" / "sft")
    assert manifest["02_sft"]["inputs"]["datasets"]["tirgen_dir"]["sha256"] == export["sha256"]
    sft_final = model_hash(root / "02_sft" / "final")["sha256"]
    assert manifest["03_rl"]["inputs"]["models"]["model"]["sha256"] == sft_final
    rungs = manifest["04_correction_inference"]["inputs"]["models"]
    assert rungs["rungs.T3"]["sha256"] == sft_final
    assert rungs["rungs.T5"]["sha256"] == model_hash(root / "03_rl" / "final")["sha256"] != sft_final
    summary = json.loads((root / "04_correction_inference" / "summary.json").read_text())
    assert {r: sorted(v) for r, v in summary.items()} == {"T1": ["cot", "tir"], "T3": ["tir"], "T5": ["tir", "tir-sc"]}
    ladder = (root / "05_analysis_figures" / "ladder.md").read_text()
    for rung in ("T1", "T3", "T5", "T6"):
        assert f"| {rung} " in ladder
    report = (root / "REPORT.md").read_text()
    assert "| 01_tirgen | ok |" in report and "| 05_analysis_figures | ok |" in report
