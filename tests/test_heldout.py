"""The one held-out rule (``thor_core.data.heldout``) and the stages that use it: notebooks 02, 03 and 04 draw their
held-out problems there, and for every profile none of them duplicates a problem the chain trained on."""

from __future__ import annotations

import pytest
import yaml

from thor_core import files
from thor_core.data.heldout import find_overlap, heldout_problems, recorded_problems, write_problems
from thor_core.data.problems import generate_problems
from thor_core.evaluation.before_after import CheckParams
from thor_core.evaluation.rungs import RungsParams
from thor_core.files import REPO_ROOT
from thor_core.params import split_params
from thor_core.rl import report as rl_report
from thor_core.rl.config import NOTEBOOK_SCHEMAS
from thor_core.rl.run import training_problems
from thor_core.sft.config import SFTNotebook, SFTParams
from thor_core.sft.report import heldout_problems as sft_heldout
from thor_core.tirgen.config import load_params as tirgen_params
from thor_core.tirgen.steps import problems_for

PROFILES = ("smoke", "cpu", "cpu-full")


def _yaml(path):
    return yaml.safe_load(path.read_text())


def test_the_rule_skips_what_it_is_told_and_fills_up_to_n():
    first = generate_problems(6, seed=9001)
    kept, note = heldout_problems(5, 9001, {"training": [first[1], first[3]]})
    assert [q.id for q in kept] == [first[i].id for i in (0, 2, 4, 5)] + ["gen/9001/6"]
    assert note == {"seed": 9001, "n": 5, "excluded": 2, "checked_against": ["training"]}
    assert heldout_problems(5, 9001)[0] == first[:5]  # nothing excluded: the generator's first n, the same everywhere
    with pytest.raises(ValueError, match="choose another heldout_seed"):
        heldout_problems(3, 9001, {"everything": generate_problems(200, seed=9001)})


def test_recorded_problems_read_run_folders_and_skip_missing_ones(tmp_path):
    write_problems(generate_problems(2, seed=1), tmp_path)
    found = recorded_problems([tmp_path, tmp_path / "never-ran"])
    assert list(found) == [str(tmp_path)] and [q.id for q in found[str(tmp_path)]] == ["gen/1/0", "gen/1/1"]


@pytest.mark.parametrize("profile", PROFILES)
def test_no_stage_checks_on_problems_the_chain_trained_on(profile, tmp_path, monkeypatch):
    """02, 03 and 04 as their profiles configure them, against every problem TIRGen and RL train on."""
    root = REPO_ROOT / "params" / profile
    tirgen, decontamination = problems_for(tirgen_params(root / "01_tirgen.yaml"))
    assert decontamination["removed"] == 0 and len(tirgen) == decontamination["checked"]  # generated: none leaks
    rl_files = [f for f in sorted(root.glob("03_rl*.yaml")) if f.stem != "03_rl-study"]  # the chain's (the ladder's)
    rl = {f.stem: training_problems(split_params(NOTEBOOK_SCHEMAS, _yaml(f))[0]) for f in rl_files}
    trained = [tirgen, *rl.values()]

    def clean(problems):
        return not find_overlap(problems, trained)

    # 02: the SFT data (a subset of TIRGen's problems; all of them here) and TIRGen's recorded problems
    monkeypatch.setattr(files, "OUTPUTS", tmp_path)
    sft_p, check, _ = split_params((SFTParams, CheckParams, SFTNotebook), _yaml(root / "02_sft.yaml"))
    tirgen_dir = files.repo_path(sft_p.tirgen_dir)
    tirgen_dir.mkdir(parents=True)
    write_problems(tirgen, tirgen_dir)
    dataset = {"question_id": [q.id for q in tirgen], "messages": [[{}, {"content": q.question}] for q in tirgen]}
    held, note = sft_heldout(sft_p, check, dataset)
    assert len(held) == check.heldout_n and clean(held) and len(note["checked_against"]) == 2
    # 03: each RL profile's own check
    for f in rl_files:
        p, check, _ = split_params(NOTEBOOK_SCHEMAS, _yaml(f))
        held, _ = rl_report.heldout_problems(p, check)
        assert len(held) == check.heldout_n and clean(held), f.name
    # 04: the ladder's generated benchmark, excluding what the chain's run folders recorded
    rungs = RungsParams(**{k: v for k, v in _yaml(root / "04_correction_inference.yaml").items()})
    for name, problems in rl.items():
        folder = files.repo_path(f"outputs/{profile}/{name}")
        folder.mkdir(parents=True, exist_ok=True)
        write_problems(problems, folder)
    assert set(rungs.heldout_exclude) >= {f"outputs/{profile}/01_tirgen", *(f"outputs/{profile}/{n}" for n in rl)}
    held = rungs.problems()["heldout"]
    assert len(held) == rungs.heldout_n and clean(held)
