"""What a run read, for its manifest: hashes of the models and datasets its parameters name, its seeds, the machine.

:func:`inputs` looks at a stage's parameters (the notebooks' names: ``model``,
``actor_model``, ``critic_model``, ``fallback_model``, the ``rungs`` mapping,
``tirgen_dir`` / ``dataset``) and hashes what each names: a local model folder
(or an embedded model, resolved to its local folder) by its safetensors files
(:func:`thor_core.runs.model_hash`, cached by size and mtime, so a second
stage on the same model costs a stat), a TIRGen SFT dataset by its Arrow
files. A hub id is recorded as the id (hashing it would mean downloading it);
a name that does not exist yet is recorded as ``missing`` (notebook 04 skips
such a rung and says so). Called by :func:`thor_core.notebook_runs.run_notebook`
when a stage starts, so chained stages can be checked against each other: 02's
dataset hash is 01's export, 03's model hash is 02's ``final/``.

Not covered: problem sets, which are either generated from a recorded seed
(``problem_seed``) or embedded files under version control (the git commit).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODEL_KEYS = ("model", "actor_model", "critic_model", "fallback_model")


def _model_entry(name: str) -> dict[str, Any]:
    """Never raises: a name the stage cannot use is the stage's to report (notebook 04 skips such a rung)."""
    from thor_core.models import EMBEDDED_PREFIX, ModelNotAvailable, resolve_model
    from thor_core.runs import model_hash, repo_path

    try:
        if name.startswith(EMBEDDED_PREFIX):
            folder = resolve_model(name)
        else:
            folder = repo_path(name)
            if not folder.exists():
                local = name.startswith((".", "/", "~", "outputs")) or name.count("/") != 1
                return {"name": name, "missing": True} if local else {"name": name, "hub_id": name}
        digest = model_hash(folder)
    except (ModelNotAvailable, OSError) as e:  # an unknown embedded name, a folder without weights (a torn run)
        return {"name": name, "unhashed": str(e)}
    return {"name": name, "path": digest["path"], "sha256": digest["sha256"]}


def model_fingerprint(name: str) -> str:
    """What identifies the weights ``name`` gives: the sha256 of its safetensors (local folder or embedded
    model, cached), else the hub id or the name as given (a hub model is identified by its id only)."""
    entry = _model_entry(name)
    return entry.get("sha256") or entry.get("hub_id") or name


def dataset_hash(folder: str | os.PathLike) -> dict[str, Any]:
    """sha256 over a saved dataset's ``*.arrow`` files (name and content; ``state.json``'s fingerprint is left out,
    as it differs between identical saves)."""
    from thor_core.runs import listing_sha256

    folder = Path(folder)
    files = sorted(folder.glob("*.arrow"))
    if not files:
        return {"path": str(folder), "missing": True}
    return {"path": str(folder), "sha256": listing_sha256(folder, files)[0]}


def inputs(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"models": {key: entry}, "datasets": {key: entry}, "seeds": {key: value}}`` for a stage's parameters."""
    from thor_core.runs import repo_path

    models = {k: _model_entry(params[k]) for k in MODEL_KEYS if isinstance(params.get(k), str) and params[k]}
    for rung, name in (params.get("rungs") or {}).items():
        models[f"rungs.{rung}"] = _model_entry(str(name))
    datasets = {}
    if params.get("dataset"):
        datasets["dataset"] = dataset_hash(repo_path(params["dataset"]))
    elif params.get("tirgen_dir"):
        datasets["tirgen_dir"] = dataset_hash(repo_path(params["tirgen_dir"]) / "sft")
    seeds = {k: v for k, v in params.items() if "seed" in k and isinstance(v, int)}
    return {"models": models, "datasets": datasets, "seeds": seeds}


def machine() -> dict[str, Any]:
    """CPU count, memory and accelerator of this machine."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory = None
    gpus = None
    if shutil.which("nvidia-smi"):  # not torch: the demo's driver process does not load it
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
            gpus = [line.strip() for line in listing.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(memory, 1) if memory else None,
        "gpus": gpus,
        "processor": platform.processor() or platform.machine(),
        **_cpu_model(),
    }


# CPU features that change CPU run times several-fold (bf16 autocast, vLLM's CPU kernels): two 2-core machines
# of this project ran the same demo stage 3.5x apart, so a wall time means little without them
_SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def fast_bf16(device: str, cpu_flags: list[str] | None = None) -> bool:
    """Whether bf16 autocast is fast on ``device`` ("cuda" or "cpu"; ``cpu_flags``: None reads this machine's).

    A GPU with bf16, or a CPU with bf16 instructions (avx512_bf16 or amx_bf16). Without them torch emulates bf16
    matmuls on the CPU: on an AVX2-only EPYC a linear layer's forward + backward took 20-34x as long as in fp32
    (benchmarks/cpu_bf16.py, docs/BENCHMARKS.md). Arm CPUs are treated as without.
    """
    if device == "cuda":
        import torch

        return torch.cuda.is_bf16_supported()
    flags = _cpu_model().get("cpu_flags", []) if cpu_flags is None else cpu_flags
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def bf16_autocast(requested: bool, device: str, cpu_flags: list[str] | None = None) -> bool:
    """``requested``, unless ``device`` has no fast bf16: then a printed note and False (fp32: faster there, exact)."""
    if requested and not fast_bf16(device, cpu_flags):
        print(
            f"note: bf16 autocast was asked for, but this {device} has no bf16 instructions (avx512_bf16 / amx_bf16): "
            "torch would emulate them, 20-34x slower than fp32 here, so this run uses fp32",
            flush=True,
        )
        return False
    return requested


def _cpu_model() -> dict[str, Any]:
    """``cpu_model`` and ``cpu_flags`` (those of ``_SPEED_FLAGS`` it has) from /proc/cpuinfo, where there is one."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name"), "cpu_flags": [f for f in _SPEED_FLAGS if f in flags]}
