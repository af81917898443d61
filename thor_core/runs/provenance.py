"""What a run read, for its manifest: hashes of the models and datasets its parameters name, its seeds, the machine.

:func:`inputs` looks at a stage's parameters (the notebooks' names: ``model``,
``actor_model``, ``critic_model``, ``fallback_model``, the ``rungs`` mapping,
``tirgen_dir`` / ``dataset``) and hashes what each names: a local model folder
(or an embedded model, resolved to its local folder) by its safetensors files
(:func:`thor_core.models.model_hash`, cached by size and mtime, so a second
stage on the same model costs a stat), a TIRGen SFT dataset by its Arrow
files. A hub id is recorded as the id (hashing it would mean downloading it);
a name that does not exist yet is recorded as ``missing`` (notebook 04 skips
such a rung and says so). Called by :func:`thor_core.runs.notebooks.run_notebook`
when a stage starts, so chained stages can be checked against each other: 02's
dataset hash is 01's export, 03's model hash is 02's ``final/``.

Not covered: problem sets, which are either generated from a recorded seed
(``problem_seed``) or embedded files under version control (the git commit).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thor_core.files import repo_path
from thor_core.models import listing_sha256, model_entry

MODEL_KEYS = ("model", "actor_model", "critic_model", "fallback_model")


def dataset_hash(folder: str | os.PathLike) -> dict[str, Any]:
    """sha256 over a saved dataset's ``*.arrow`` files (name and content; ``state.json``'s fingerprint is left out,
    as it differs between identical saves)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.arrow"))
    if not files:
        return {"path": str(folder), "missing": True}
    return {"path": str(folder), "sha256": listing_sha256(folder, files)[0]}


def inputs(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"models": {key: entry}, "datasets": {key: entry}, "seeds": {key: value}}`` for a stage's parameters."""
    models = {k: model_entry(params[k]) for k in MODEL_KEYS if isinstance(params.get(k), str) and params[k]}
    for rung, name in (params.get("rungs") or {}).items():
        models[f"rungs.{rung}"] = model_entry(str(name))
    datasets = {}
    if params.get("dataset"):
        datasets["dataset"] = dataset_hash(repo_path(params["dataset"]))
    elif params.get("tirgen_dir"):
        datasets["tirgen_dir"] = dataset_hash(repo_path(params["tirgen_dir"]) / "sft")
    seeds = {k: v for k, v in params.items() if "seed" in k and isinstance(v, int)}
    return {"models": models, "datasets": datasets, "seeds": seeds}
