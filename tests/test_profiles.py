"""Every profile file in params/: names its notebook, declares only names the notebook's parameters cell has,
and reads and writes only its own profile's run folders (a copied profile that still pointed at another one
would chain into the wrong stage's output)."""

from __future__ import annotations

import re

import pytest

from thor_core.files import REPO_ROOT
from thor_core.params import read_yaml_mapping
from thor_core.runs.notebooks import _declared_parameters, _resolve_notebook

YAML_FILES = sorted(p for p in (REPO_ROOT / "params").glob("*/*.yaml") if p.parent.name != "accelerate")
PROFILE_FILES = [p for p in YAML_FILES if re.match(r"\d\d_", p.name)]  # a notebook's: 03_rl-episode is notebook 03_rl
# the files that are not a notebook's, each with the test that reads it through its own schema
OTHER_FILES = {"study/study.yaml": "tests/test_study.py (thor_core.runs.study.StudyParams)"}


def test_every_params_file_is_a_notebooks_profile_or_named_here():
    others = {f"{p.parent.name}/{p.name}" for p in YAML_FILES if p not in PROFILE_FILES}
    assert others == set(OTHER_FILES), "a params file no test reads: name it after its notebook or add it here"


def test_the_demo_profiles_are_all_there():
    profiles = {p.parent.name for p in PROFILE_FILES}
    assert {"smoke", "cpu", "cpu-full", "gpu-1.5b", "gpu-7b"} <= profiles
    for profile in ("smoke", "cpu", "cpu-full"):
        names = {p.stem for p in PROFILE_FILES if p.parent.name == profile}
        assert {"01_tirgen", "02_sft", "03_rl", "04_correction_inference", "05_analysis_figures"} <= names, profile


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_profile_file_fits_its_notebook_and_its_own_folder(path):
    notebook = _resolve_notebook(path.stem.split("-")[0])  # 03_rl-episode is notebook 03_rl
    _declared_parameters(notebook, read_yaml_mapping(path))  # raises ParamsError naming an unknown key
    profile = path.parent.name
    for folder in re.findall(r"outputs/([\w.-]+)", path.read_text()):
        assert folder == profile, f"{path} refers to outputs/{folder}/ (profile {profile})"


@pytest.mark.parametrize("notebook", sorted((REPO_ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_papermill_reads_every_name_of_a_parameters_cell(notebook):
    """papermill's inspector skips a line it cannot parse (a comment holding ``>=``, say) with only a warning:
    the name then cannot be set from a profile."""
    import nbformat
    import papermill

    cell = next(c for c in nbformat.read(notebook, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = set(re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=]+)?=", cell.source, flags=re.M))
    assert assigned == set(papermill.inspect_notebook(str(notebook)))


@pytest.mark.parametrize("profile", ["gpu-1.5b", "gpu-7b"])
def test_the_gpu_rl_profiles_take_several_updates_per_rollout_batch(profile):
    """The authors' off-policy schedule (docs/METHOD.md, RL settings): with one update per rollout batch the
    importance ratio is always 1 and clip-higher and the dual clip never act."""
    values = read_yaml_mapping(REPO_ROOT / "params" / profile / "03_rl.yaml")
    updates, questions = values["updates_per_batch"], values["questions_per_step"]
    assert updates > 1, f"{profile}: updates_per_batch {updates}: on-policy, the clips are inert"
    assert questions % updates == 0 and questions // updates >= 16, (profile, questions, updates)  # whole updates
