"""Notebook 01 (TIRGen) headless with the smoke profile: loop, CoT pre-filter, filters, export, figures."""

from __future__ import annotations

import json

import nbformat
import pytest

from thor_core import provenance, sft_data, tirgen
from thor_core.runs import run_notebook


@pytest.mark.notebook
@pytest.mark.model
def test_notebook_01_smoke(tmp_path):
    executed = run_notebook("01_tirgen", profile="smoke", out_dir=tmp_path / "nb01")
    run_dir = executed.parent
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "ok"
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["questions"] == 6 and len(tirgen.load_problems(run_dir)) == 6
    assert (run_dir / "cot" / "records-cot.jsonl").exists()  # the CoT pre-filter ran (cot_filter_k: 1)
    kept_questions = 6 - stats["cot_dropped_questions"]
    assert stats["attempts"] == 2 * kept_questions  # k: 2
    assert stats["kept"] >= 1  # make smoke's 02 trains on this export
    assert [r["stage"] for r in stats["funnel"] if r["samples"] is not None][0] == "generated"
    assert stats["critic"]["steps"] >= stats["attempts"]
    assert len(sft_data.load_sft_dataset(run_dir / "sft")) == stats["kept"]
    assert (run_dir / "funnel.png").stat().st_size > 1000 and (run_dir / "funnel.pdf").exists()
    html = "".join(o.get("data", {}).get("text/html", "") for c in nb.cells for o in c.get("outputs", []))
    assert 'title="actor"' in html  # trajectories rendered by writer
    page = (run_dir / "trajectories.html").read_text()  # and the same records as a standalone viewer page
    assert page.startswith("<!DOCTYPE html>") and "TIRGen samples" in page

    # provenance: the manifest names the model by hash, the seeds, the parameters used, the machine
    m = json.loads((run_dir / "manifest.json").read_text())
    actor = m["inputs"]["models"]["actor_model"]
    assert actor["name"] == "embedded:qwen2.5-coder-0.5b-instruct" and len(actor["sha256"]) == 64
    assert m["inputs"]["seeds"]["seed"] == m["all_params"]["seed"] and m["all_params"]["n_problems"] == 6
    assert m["git"]["commit"] and m["packages"]["vllm"] and m["machine"]["cpus"] >= 1

    # the same seed into a fresh folder: the same attempts, token for token, and the same dataset
    again = run_notebook("01_tirgen", profile="smoke", out_dir=tmp_path / "nb01-again").parent
    assert _attempts(again) == _attempts(run_dir) != []
    assert provenance.dataset_hash(again / "sft") == {
        **provenance.dataset_hash(run_dir / "sft"),
        "path": str(again / "sft"),
    }


def _attempts(run_dir):
    rows = [json.loads(line) for line in (run_dir / "attempts.jsonl").read_text().splitlines()]
    return sorted((r["question_id"], tuple(r["completion_ids"]), r["correct"]) for r in rows)
