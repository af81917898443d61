"""Notebook 04 (the ladder's rungs) headless with the smoke profile, and the ladder built from its files.

The smoke chain (conftest) runs the profile as it is (the embedded Qwen and the chain's checkpoints on vLLM);
the skipped rung, every variant and the same-seed check run here on the tiny random Qwen through hf (plumbing).
"""

from __future__ import annotations

import json

import nbformat
import pytest

from thor_core.models import TINY_MODEL
from thor_core.runs.ladder import build_ladder
from thor_core.runs.notebooks import run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.model]


def test_the_smoke_chains_notebook_04(smoke_chain):
    smoke_chain.check()
    run_dir = smoke_chain.root / "04_correction_inference"
    nb = nbformat.read(run_dir / "04_correction_inference.ipynb", as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    for rung, tags in {"T1": ("cot", "tir"), "T3": ("tir",), "T5": ("tir", "tir-sc")}.items():
        for tag in tags:  # params/smoke/04_correction_inference.yaml: (2 held-out + 2 MATH-500) x k=2
            assert len((run_dir / rung / f"records-{tag}.jsonl").read_text().splitlines()) == 8
    md = (run_dir / "summary.md").read_text()
    assert "## Accuracy per benchmark" in md and "## Cost of self-correction" in md
    assert (run_dir / "rungs_accuracy.png").stat().st_size > 1000 and (run_dir / "trajectories.html").is_file()


def test_notebook_04_smoke(tmp_path):
    missing = tmp_path / "no-sft" / "final"  # T3 points at a folder that is not there: skipped with a note
    rungs = {"T1": TINY_MODEL, "T3": str(missing)}
    # the tiny model through hf, every variant: the same-seed check below holds exactly on hf; on vLLM it is not
    # guaranteed (two TIRGen runs of one seed differed there, see test_notebook_01)
    overrides = {"rungs": rungs, "self_correction_rungs": ["T1"], "backend": "hf", "max_new_tokens": 48}
    executed = run_notebook(
        "04_correction_inference",
        profile="smoke",
        overrides=overrides,
        out_dir=tmp_path / "04_correction_inference",
    )
    run_dir = executed.parent
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "ok"
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"T3 (SFT only (TIRGen cold start)) skipped: model folder {missing} does not exist" in text
    assert "python -m thor_core.runs 02_sft" in text

    # rung T1: CoT, TIR and TIR with self-correction, each 4 problems (2 held-out + 2 MATH-500) x k=2
    for tag in ("cot", "tir", "tir-sc"):
        assert len((run_dir / "T1" / f"records-{tag}.jsonl").read_text().splitlines()) == 8
        assert (run_dir / "T1" / f"summary-{tag}.json").is_file()
    assert not (run_dir / "T3").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == {"T1"} and set(summary["T1"]) == {"cot", "tir", "tir-sc"}
    assert set(summary["T1"]["tir"]["benchmarks"]) == {"heldout", "math500_mmath"}
    assert len(summary["T1"]["tir"]["best_of_n"]) == 2  # N = 1, 2 (k = 2; N = 4 needs k >= 4)

    md = (run_dir / "summary.md").read_text()
    for heading in (
        "## Accuracy per benchmark",
        "## Best-of-N",
        "## Cost of self-correction",
        "## Tool success x correctness",
    ):
        assert heading in md
    assert "| T1 (base) | tir | " in md and "needs k >= 4" in md and "skipped" in md
    assert (run_dir / "rungs_accuracy.png").stat().st_size > 1000
    assert (run_dir / "rungs_best_of_n.png").is_file() and (run_dir / "trajectories.html").is_file()

    # notebook 05's ladder reads these files: T1 present (tir), the rest "not run"
    ladder = build_ladder(tmp_path, "04_correction_inference", profile="smoke")
    by_rung = {r.rung: r for r in ladder.rungs}
    assert by_rung["T1"].present and by_rung["T1"].n == 8
    assert not by_rung["T3"].present and not by_rung["T6"].present

    # the same seeds into a fresh folder: the same answers, token for token, and the same summary numbers
    again = run_notebook(
        "04_correction_inference", profile="smoke", overrides=overrides, out_dir=tmp_path / "04-again"
    ).parent
    assert _answers(again / "T1") == _answers(run_dir / "T1") != []
    for tag in ("cot", "tir", "tir-sc"):
        first, second = (json.loads((d / "T1" / f"summary-{tag}.json").read_text()) for d in (run_dir, again))
        assert first["overall"] == second["overall"]


def _answers(rung_dir):
    rows = []
    for path in sorted(rung_dir.glob("records-*.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            rows.append((path.name, r["question_id"], tuple(r["completion_ids"]), r["correct"]))
    return sorted(rows)
