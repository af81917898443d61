"""Notebook 03 (hierarchical RL) headless.

- The smoke chain's notebook 03 (``conftest.smoke_chain``: the real embedded Qwen from notebook 02's checkpoint,
  vLLM and the sandbox): training, curves, the before/after check and the held-out step-level check on a real model.
- ``papermill notebooks/03_rl.ipynb OUT`` as the user's CI runs it, with the notebook's defaults and
  ``fallback_model`` set to the tiny random Qwen (papermill plumbing: the fallback when notebook 02 has not run, the
  progress lines, the files, the re-run that redoes nothing); ``THOR_OUTPUTS`` keeps the run folder in tmp.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import nbformat
import pytest

from thor_core.files import REPO_ROOT
from thor_core.models import TINY_MODEL
from thor_core.params import split_params
from thor_core.record import read_jsonl
from thor_core.rl.config import NOTEBOOK_SCHEMAS, load_params

pytestmark = [pytest.mark.notebook, pytest.mark.model]


@pytest.fixture
def outputs(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path / "outputs", ignore_errors=True)


def _texts(nb):
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    return text, markdown


def _check_run(run, text, markdown, heldout_n, step_check_n):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0 <= r["reward"] <= 1 and r["episode_rollouts"] >= 8 for r in rows)
    assert (run / "final" / "config.json").is_file() and (run / "curves.png").stat().st_size > 1000
    assert (run / "curves.pdf").is_file() and (run / "samples" / "step-2.jsonl").is_file()
    assert (run / "problems.jsonl").is_file()  # the training problems, for held-out sets to avoid
    html = (run / "trajectories.html").read_text()
    assert "<details" in html and "<script" not in html
    check = json.loads((run / "before_after.json").read_text())
    assert check["heldout"]["n"] == heldout_n and check["heldout"]["checked_against"] == ["rl training problems"]
    assert check["after"]["n"] == check["before"]["n"] == heldout_n
    assert "| step-level pass rate |" in markdown and "p (rising)" in markdown  # the trend table under the curves
    # the held-out step-level check: the start model's failed calls, continued by both models (or said skipped)
    start_answers = read_jsonl(next((run / "eval-start").glob("records-*.jsonl")))
    failed = sum(any(not c.success for c in r.tool_calls) for r in start_answers)
    if failed:
        step_check = json.loads((run / "step_check.json").read_text())
        assert step_check["prefixes"]["n"] == min(failed, step_check_n)  # the first failed call per answer
        assert step_check["rates"]["rl"]["n"] == step_check["rates"]["start"]["n"] == 2 * step_check["prefixes"]["n"]
        assert "| prefixes (" in markdown
    else:
        assert "skipped: thor mode" in text and not (run / "step_check.json").exists()
    return rows


def test_the_smoke_chains_notebook_03(smoke_chain):
    """The real model: notebook 02's checkpoint trained 2 steps, checked before/after and at the step level."""
    smoke_chain.check()
    run = smoke_chain.root / "03_rl"
    text, markdown = _texts(nbformat.read(run / "03_rl.ipynb", as_version=4))
    assert "step 2/2" in text and "eta" in text and "IProgress" not in text
    _check_run(run, text, markdown, heldout_n=2, step_check_n=4)  # params/smoke/03_rl.yaml; the cell's step_check_n
    summary = json.loads((run / "rl_summary.json").read_text())
    assert summary["steps"] == 2 and summary["mode"] == "thor"
    assert summary["start_model"] == str(smoke_chain.root / "02_sft" / "final")


def test_papermill_with_the_notebooks_defaults(outputs):
    """The defaults, with the tiny model as the fallback: the plumbing of a fresh clone's headless run (notebook 02
    has not run, so the notebook says it starts from the fallback)."""
    tmp_path = outputs
    out = tmp_path / "OUT.ipynb"
    env = {**os.environ, "THOR_OUTPUTS": str(tmp_path / "outputs")}
    cmd = [sys.executable, "-m", "papermill", "notebooks/03_rl.ipynb", str(out), "-p", "fallback_model", TINY_MODEL]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    text, markdown = _texts(nbformat.read(out, as_version=4))
    assert "step 2/2" in text and "eta" in text  # plain progress lines
    assert "IProgress" not in text and "TqdmWarning" not in text
    run = tmp_path / "outputs" / "adhoc" / "03_rl"
    _check_run(run, text, markdown, heldout_n=4, step_check_n=4)
    summary = json.loads((run / "rl_summary.json").read_text())
    assert summary["steps"] == 2 and summary["mode"] == "thor"
    # THOR_OUTPUTS holds no notebook 02 run (as on a fresh clone): the fallback, said plainly
    assert f"starting from {TINY_MODEL} instead" in text

    # Re-run with the same output folder: the finished run is not redone.
    again = [*cmd[:4], str(tmp_path / "again.ipynb"), *cmd[5:]]
    redone = subprocess.run(again, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert redone.returncode == 0, redone.stderr[-3000:]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "profile",
    ["smoke", "cpu", "cpu-full", "gpu-1.5b", "gpu-7b"]
    + [f"{p}/03_rl-{m}" for p in ("cpu", "cpu-full") for m in ("episode", "cot")]
    + ["cpu/03_rl-study"],
)
def test_every_profile_is_valid_for_the_notebook_and_the_cli(profile):
    path = REPO_ROOT / "params" / (f"{profile}.yaml" if "/" in profile else f"{profile}/03_rl.yaml")
    import yaml

    p, check, nb = split_params(NOTEBOOK_SCHEMAS, yaml.safe_load(path.read_text()), str(path))  # the notebook's view
    assert p.steps >= 1 and check.eval_k >= 1 and nb.step_check_k >= 1
    assert load_params(path).mode in ("cot", "episode", "thor")  # the CLI's


def test_the_parameters_cell_declares_every_setting():
    """So every profile key can be injected (run_notebook refuses names the cell lacks)."""
    import dataclasses

    import papermill

    declared = set(papermill.inspect_notebook(str(REPO_ROOT / "notebooks" / "03_rl.ipynb")))
    assert declared == {f.name for schema in NOTEBOOK_SCHEMAS for f in dataclasses.fields(schema)}
