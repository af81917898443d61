"""Notebook 02 (SFT) headless with the smoke profile: the smoke chain's run, and the plumbing on the tiny model.

Covered: training into the run folder (final/, loss.jsonl, loss.png, summary),
the before/after check on held-out problems (before_after.json with both
models' rates and the paired tests), and the failure, at once and with what to
run first, when the dataset is missing. The plumbing runs on a crafted
TIRGen-style dataset and the tiny random Qwen; the smoke chain (conftest) runs
the profile as it is, on the embedded Qwen and 01's export.
"""

from __future__ import annotations

import json

import nbformat
import pytest
from test_sft import write_dataset

from thor_core.models import DEFAULT_MODEL, TINY_MODEL
from thor_core.runs import provenance
from thor_core.runs.notebooks import NotebookError, run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.model]
# the crafted dataset is tokenised by test_sft.MODEL, the tiny random Qwen: plumbing
TINY = {"model": TINY_MODEL, "max_length": 256}


def test_the_smoke_chains_notebook_02(smoke_chain):
    smoke_chain.check()
    run_dir = smoke_chain.root / "02_sft"
    nb = nbformat.read(run_dir / "02_sft.ipynb", as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    summary = json.loads((run_dir / "sft_summary.json").read_text())
    assert summary["status"] == "done" and summary["steps"] == 2  # params/smoke/02_sft.yaml
    assert (run_dir / "final" / "config.json").is_file() and (run_dir / "loss.png").stat().st_size > 1000
    report = json.loads((run_dir / "before_after.json").read_text())
    assert report["models"]["base"] == DEFAULT_MODEL and report["heldout"]["n"] == 2
    assert report["before"]["n"] == report["after"]["n"] == 4


def test_notebook_02_smoke(tmp_path):
    dataset = write_dataset(tmp_path / "sft", n=8)
    executed = run_notebook(
        "02_sft", profile="smoke", out_dir=tmp_path / "nb02", overrides={"dataset": str(dataset), **TINY}
    )
    run_dir = executed.parent
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    assert manifest["inputs"]["datasets"]["dataset"]["sha256"] == provenance.dataset_hash(dataset)["sha256"]
    assert len(manifest["inputs"]["models"]["model"]["sha256"]) == 64
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "step 2/2" in text and "eta" in text  # plain progress lines, no widgets

    summary = json.loads((run_dir / "sft_summary.json").read_text())
    assert summary["status"] == "done" and summary["steps"] == 2 and summary["dataset_size"] == 8
    assert (run_dir / "final" / "config.json").is_file() and (run_dir / "loss.png").stat().st_size > 1000
    assert len((run_dir / "loss.jsonl").read_text().splitlines()) == 2

    report = json.loads((run_dir / "before_after.json").read_text())
    assert report["models"]["base"] == TINY_MODEL
    assert report["models"]["sft"] == str(run_dir / "final")
    assert report["heldout"]["n"] == 2 and report["k"] == 2
    for side in ("before", "after"):
        m = report[side]
        assert m["n"] == 4 and all(
            m[k] is None or 0 <= m[k] <= 1 for k in ("code_block_rate", "boxed_rate", "accuracy")
        )
    for test in ("correct", "code_block", "boxed"):
        assert report["paired"][test]["n"] == 4 and 0 < report["paired"][test]["p_value"] <= 1
    assert len((run_dir / "eval-sft" / "records-tir.jsonl").read_text().splitlines()) == 4


def test_notebook_02_without_a_dataset_says_what_to_run_first(tmp_path):
    with pytest.raises(NotebookError, match="01_tirgen") as e:
        run_notebook(
            "02_sft",
            profile="smoke",
            out_dir=tmp_path / "nb02",
            overrides={"dataset": str(tmp_path / "nothing-here"), **TINY},
        )
    assert "FileNotFoundError" in str(e.value) and "python -m thor_core.runs 01_tirgen" in str(e.value)
    assert not (tmp_path / "nb02" / "final").exists()
