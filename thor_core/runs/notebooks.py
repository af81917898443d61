"""Headless notebook runs: papermill into a run folder with a manifest (``python -m thor_core.runs``).

:func:`run_notebook` checks the parameters against the notebook's
``parameters`` cell, starts the run folder (``thor_core.runs.start_run``),
executes the notebook with papermill on a kernel talking over Unix sockets,
and closes the manifest with ``ok`` or ``failed`` and the failing cell.
``python -m thor_core.runs`` is this module's CLI; parameters are checked by
``thor_core.params``, run folders written by ``thor_core.runs``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from thor_core import files
from thor_core.files import REPO_ROOT
from thor_core.hardware import machine
from thor_core.params import ParamsError, profile_path, read_yaml_mapping, unknown_hint
from thor_core.runs import provenance, start_run
from thor_core.sandbox import SANDBOX_URL_HELP


class NotebookError(RuntimeError):
    """A notebook raised; the message names the failing cell."""


def _resolve_notebook(notebook: str | os.PathLike) -> Path:
    """The path as given, else relative to the repo root, else ``notebooks/<name>[.ipynb]``."""
    given = Path(notebook)
    candidates = [given, REPO_ROOT / given, REPO_ROOT / "notebooks" / given, REPO_ROOT / "notebooks" / f"{given}.ipynb"]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise FileNotFoundError(f"notebook not found: {notebook} (looked at {', '.join(map(str, candidates))})")


def _declared_parameters(notebook: Path, params: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook's ``parameters`` cell as ``{name: default}`` (a literal's value, else the expression's source
    text); ParamsError for any name in ``params`` it does not define."""
    import papermill

    declared = {}
    for name, info in papermill.inspect_notebook(str(notebook)).items():
        try:
            declared[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            declared[name] = info["default"]
    if not declared and params:
        raise ParamsError(notebook.name, ["the notebook has no cell tagged 'parameters' to receive parameters"])
    problems = []
    for key in params:
        if key not in declared:
            problems.append(f"{key}: not in the notebook's parameters cell ({unknown_hint(key, sorted(declared))})")
    if problems:
        raise ParamsError(notebook.name, problems)
    return declared


def _failure(error: BaseException) -> tuple[dict[str, Any], str]:
    """Manifest ``error`` entry and a one-line message naming the failing cell."""
    from papermill.exceptions import PapermillExecutionError

    if not isinstance(error, PapermillExecutionError):
        return {"type": type(error).__name__, "message": str(error)}, f"{type(error).__name__}: {error}"
    # papermill's cell_index counts cells of the executed notebook, which has the
    # injected-parameters cell (and an error banner) added: name the cell by its
    # execution count and first source line instead, which survive those edits.
    first_line = next((ln for ln in error.source.splitlines() if ln.strip()), "")
    cell = f"cell [{error.exec_count}] `{first_line.strip()[:80]}`"
    entry = {
        "type": error.ename,
        "message": error.evalue,
        "cell_execution_count": error.exec_count,
        "cell_source": error.source,
    }
    return entry, f"{cell} raised {error.ename}: {error.evalue}"


@contextlib.contextmanager
def _kernel_env(values: Mapping[str, str]):
    """Set environment variables for the kernels started inside the block (a kernel inherits ours); restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_notebook(
    notebook_path: str | os.PathLike,
    profile: str | None = None,
    params_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike | None = None,
    kernel: str = "python3",
    resume: bool = False,
    model_path: str | os.PathLike | None = None,
    progress_bar: bool = False,
    log_output: bool = False,
    stdout_file: TextIO | None = None,
    stderr_file: TextIO | None = None,
) -> Path:
    """Execute a notebook headless with papermill; return the executed notebook's path.

    Parameters come from ``params/<profile>/<notebook>.yaml`` or ``params_file``
    (not both), then ``overrides`` on top; every name must be defined in the
    notebook's ``parameters`` cell (types are checked inside the notebook by
    :func:`params_from_namespace`). If that cell defines ``run_dir`` and no value
    was given, it receives the run folder, so the notebook writes its artefacts
    beside the executed copy.

    The run folder is ``out_dir``, or ``OUTPUTS/<profile or "adhoc">/<notebook stem>``;
    see :func:`start_run` for ``resume`` and ``model_path``. The kernel's working
    directory is the notebook's folder (as in JupyterLab), and its environment
    has ``THOR_PROGRESS=lines`` (plain progress lines, ``thor_core.progress``) and vLLM at warnings. On failure the
    manifest gets status ``"failed"`` and the error, and :class:`NotebookError`
    naming the cell is raised. ``log_output`` sends papermill's lines and the cells' outputs (streams and
    results) to the ``papermill`` logger; ``stdout_file`` and ``stderr_file`` get the cells' streams as written.
    """
    import papermill

    notebook = _resolve_notebook(notebook_path)
    if profile is not None and params_file is not None:
        raise ValueError("give a profile or a params_file, not both")
    source = profile_path(profile, notebook) if profile is not None else params_file
    params = read_yaml_mapping(Path(source)) if source is not None else {}
    params.update(overrides or {})
    declared = _declared_parameters(notebook, params)

    if out_dir is None:
        root, name = (
            files.OUTPUTS.resolve(),
            f"{profile or 'adhoc'}/{notebook.stem}",
        )  # read at call time (tests patch it)
    else:
        root, name = Path(out_dir).resolve().parent, Path(out_dir).resolve().name
    run = start_run(
        name,
        params,
        root,
        seed=params.get("seed"),
        model_path=model_path,
        resume=resume,
        all_params={**declared, **params},  # the notebook's defaults under the given values: what the run used
        inputs=provenance.inputs({**declared, **params}),
        machine=machine(),
        notebook=str(notebook),
        profile=profile,
        params_file=str(source) if source is not None else None,
        executed_notebook=str(root / name / notebook.name),
    )
    executed = run.dir / notebook.name
    if "run_dir" in declared and "run_dir" not in params:
        params["run_dir"] = run.manifest["all_params"]["run_dir"] = str(run.dir)
        run.write()
    from jupyter_client.manager import KernelManager

    # The kernel talks over Unix sockets, not loopback TCP: nothing listens on a port, and the kernel has no
    # "running over TCP without encryption" warning to print into the demo's terminal. The sockets live in a
    # private temporary folder (jupyter_client's default is ``kernel-ipc-<n>`` in the working directory, which
    # would litter notebooks/ for JupyterLab's file browser); a short path, as socket paths are limited to ~100 bytes.
    sockets = tempfile.mkdtemp(prefix="thor-kernel-")
    km = KernelManager(kernel_name=kernel, transport="ipc", ip=os.path.join(sockets, "ipc"))
    try:
        # headless: plain progress lines (thor_core.progress); vLLM's INFO lines (engine config, every start-up)
        # would fill the executed notebook and the demo's terminal: warnings only, unless the user chose a level
        quiet = {"THOR_PROGRESS": "lines", "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
        with _kernel_env(quiet):
            papermill.execute_notebook(
                str(notebook),
                str(executed),
                parameters=params,
                kernel_name=kernel,
                cwd=str(notebook.parent),
                progress_bar=progress_bar,
                log_output=log_output,  # the cells' output and results to papermill's logger (the demo: run.log)
                stdout_file=stdout_file,  # the cells' streams, as written (the demo: its terminal)
                stderr_file=stderr_file,
                km=km,
            )
    except BaseException as e:
        entry, message = _failure(e)
        run.finish("failed", error=entry)
        if not isinstance(e, Exception):  # Ctrl-C and friends stay what they are
            raise
        raise NotebookError(
            f"{notebook.name} failed: {message}\n  executed notebook: {executed}\n  manifest: {run.manifest_path}"
        ) from e
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        shutil.rmtree(sockets, ignore_errors=True)
    run.finish("ok")
    return executed


def _parse_override(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), yaml.safe_load(value) if value.strip() else None


def main(argv: list[str] | None = None) -> int:
    """``python -m thor_core.runs NOTEBOOK --profile smoke [-p key=value ...]``."""
    ap = argparse.ArgumentParser(
        prog="python -m thor_core.runs",
        description="Run a notebook headless with papermill into its run folder, with a manifest.",
    )
    ap.add_argument("notebook", help="path, or a name under notebooks/ (e.g. 04_correction_inference)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--profile", help="params/<profile>/<notebook>.yaml (smoke, cpu, gpu-*)")
    group.add_argument("--params-file", help="a YAML parameter file instead of a profile")
    ap.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        type=_parse_override,
        metavar="KEY=VALUE",
        help="override one parameter; the value is read as YAML (3, 0.5, true, [a, b], text)",
    )
    ap.add_argument("--out-dir", help="run folder (default: outputs/<profile>/<notebook>)")
    ap.add_argument("--resume", action="store_true", help="reuse an existing run folder")
    ap.add_argument("--model-path", help="local weights file or model folder to hash into the manifest")
    ap.add_argument("--kernel", default="python3")
    ap.add_argument("--sandbox-url", action="append", dest="sandbox_urls", metavar="URL", help=SANDBOX_URL_HELP)
    args = ap.parse_args(argv)
    overrides = dict(args.param) | ({"sandbox_urls": args.sandbox_urls} if args.sandbox_urls else {})
    try:
        executed = run_notebook(
            args.notebook,
            profile=args.profile,
            params_file=args.params_file,
            overrides=overrides,
            out_dir=args.out_dir,
            kernel=args.kernel,
            resume=args.resume,
            model_path=args.model_path,
            progress_bar=sys.stderr.isatty(),
        )
    except (ParamsError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NotebookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(executed)
    return 0
