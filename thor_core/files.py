"""The repo's paths and atomic, crash-safe file writes: the bottom layer every stage writes through.

Covered: ``REPO_ROOT``, ``OUTPUTS`` (``THOR_OUTPUTS`` moves it), :func:`repo_path` (how every parameter's path is
read), :func:`write_json_atomic`, the one JSONL reader for files a kill may have torn (:func:`iter_json_lines`,
:func:`read_jsonl_rows`), the one settings check of resumable folders (:func:`check_settings`) and the listing
every notebook ends with (:func:`folder_listing`).

Not covered: run folders and manifests (``thor_core.runs``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


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


def repo_path(path: str | os.PathLike) -> Path:
    """``path`` as given if absolute, else relative to the repo root; ``outputs/...`` is under ``OUTPUTS``
    (``THOR_OUTPUTS`` moves every stage's folder, and the paths profiles give between stages, together)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    if path.parts and path.parts[0] == "outputs":
        return OUTPUTS.joinpath(*path.parts[1:])
    return REPO_ROOT / path


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


def iter_json_lines(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file that a killed writer may have left with a torn last line.

    The torn last line is skipped (the writer died mid-line; what it had written before is kept); an unreadable
    line before the end is an error naming it, since skipping it would lose rows silently.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                return
            raise ValueError(f"{path}: line {i + 1} is not valid JSON ({e})") from e


def read_jsonl_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """:func:`iter_json_lines` as a list; ``[]`` when the file does not exist yet. NaN reads as ``float('nan')``."""
    return list(iter_json_lines(path)) if Path(path).is_file() else []


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_settings(
    path: str | os.PathLike, settings: Mapping[str, Any], what: str, remedy: str, optional: tuple[str, ...] = ()
) -> None:
    """Record ``settings`` at ``path`` the first time; later, refuse to go on under other ones.

    The one rule of every resumable folder (evaluation records, TIRGen attempts, SFT and RL checkpoints): work made
    under some settings is never continued under others. A ValueError names each differing setting (nested keys
    dotted), ``what`` the folder holds and ``remedy`` (how to start over). Keys in ``optional`` are compared only
    when both sides have them (a key added to the settings after the folder was written).
    """
    path = Path(path)
    settings = json.loads(json.dumps(settings, default=str))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, settings)
        return
    old, new = _flatten(json.loads(path.read_text())), _flatten(settings)
    for key in optional:
        if key not in old or key not in new:
            old.pop(key, None)
            new.pop(key, None)
    if changed := sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)):
        raise ValueError(
            f"{path.parent} holds {what} made with other settings ({', '.join(changed)} differ, see {path.name}); "
            f"{remedy}"
        )


def folder_listing(folder: str | os.PathLike) -> str:
    """A run folder's entries as a Markdown list (folders with a trailing ``/``): each notebook's last cell displays
    it, so JupyterLab and the executed notebook show what the stage wrote, while the demo's terminal, which gets a
    notebook's printed streams only, keeps to the stage's one line naming the folder."""
    return "\n".join(f"- `{p.name}{'/' if p.is_dir() else ''}`" for p in sorted(Path(folder).iterdir()))
