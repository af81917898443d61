"""Notebook 04 (correction and inference) headless with the smoke profile."""

from __future__ import annotations

import json

import nbformat
import pytest

from thor_core.runs import run_notebook


@pytest.mark.notebook
@pytest.mark.model
def test_notebook_04_smoke(tmp_path):
    executed = run_notebook("04_correction_inference", profile="smoke", out_dir=tmp_path / "nb04")
    run_dir = executed.parent
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "ok"

    summaries = json.loads((run_dir / "summary.json").read_text())
    assert set(summaries) == {"tir", "tir-sc"}
    for tag, s in summaries.items():
        assert s["k"] == 2 and s["overall"]["samples"] == 4 and len(s["best_of_n"]) == 2
        assert len((run_dir / f"records-{tag}.jsonl").read_text().splitlines()) == 4
    assert summaries["tir-sc"]["self_correction"] and not summaries["tir"]["self_correction"]
    assert (run_dir / "accuracy.png").stat().st_size > 1000
    assert (run_dir / "best_of_n-tir.png").exists()
    assert "| benchmark |" in (run_dir / "summary.md").read_text()

