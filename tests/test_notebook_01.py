"""Notebook 01 (TIRGen) headless with the smoke profile: loop, CoT pre-filter, filters, export, figures.

Run here on SmolLM2-135M through the hf backend (``TINY``): that is what makes the same-seed check exact.
The smoke profile itself (the embedded Qwen model on vLLM) runs in ``test_demo``'s chain; on vLLM two runs
of one seed are not token-identical (a few attempts in 16 differ: its CPU kernels' numerics depend on how
requests are batched), so the check is made where it holds.
"""

from __future__ import annotations

import json

import nbformat
import pytest

from thor_core import provenance, sft_data, tirgen
from thor_core.notebook_runs import run_notebook

TINY = dict(actor_model="embedded:smollm2-135m-instruct", actor_backend="hf", n_problems=4, k=1, step_tokens=32,
            max_new_tokens=96, max_steps=3, critic_max_new_tokens=48, critic_retries=0, cot_max_new_tokens=32)  # fmt: skip


@pytest.mark.notebook
@pytest.mark.model
def test_notebook_01_smoke(tmp_path):
    executed = run_notebook("01_tirgen", profile="smoke", out_dir=tmp_path / "nb01", overrides=TINY)
    run_dir = executed.parent
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "ok"
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["questions"] == 4 and len(tirgen.load_problems(run_dir)) == 4
    assert (run_dir / "cot" / "records-cot.jsonl").exists()  # the CoT pre-filter ran (cot_filter_k: 1)
    kept_questions = 4 - stats["cot_dropped_questions"]
    assert stats["attempts"] == kept_questions  # k: 1
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
    assert actor["name"] == "embedded:smollm2-135m-instruct" and len(actor["sha256"]) == 64
    assert m["inputs"]["seeds"]["seed"] == m["all_params"]["seed"] and m["all_params"]["n_problems"] == 4
    assert m["git"]["commit"] and m["packages"]["vllm"] and m["machine"]["cpus"] >= 1

    # the same seed into a fresh folder: the same attempts, token for token, and the same dataset
    again = run_notebook("01_tirgen", profile="smoke", out_dir=tmp_path / "nb01-again", overrides=TINY).parent
    assert _attempts(again) == _attempts(run_dir) != []
    assert provenance.dataset_hash(again / "sft") == {
        **provenance.dataset_hash(run_dir / "sft"),
        "path": str(again / "sft"),
    }


def _attempts(run_dir):
    rows = [json.loads(line) for line in (run_dir / "attempts.jsonl").read_text().splitlines()]
    return sorted((r["question_id"], tuple(r["completion_ids"]), r["correct"]) for r in rows)
