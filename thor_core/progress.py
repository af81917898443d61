"""Progress bars shown where the user looks: one ``bar()`` for every loop of the kit.

Covered: rollouts (``rollout.run_rollouts``, so evaluation and RL), TIRGen's
attempts (``tirgen.generate``), and the choice of SFT's bars (``sft.sft_config``
asks :func:`mode`; the HF Trainer draws them). The RL trainer prints its own
step lines (``thor_core.rl.run``).

``bar(total, desc, unit)`` returns a tqdm-like object (``update``, ``close``,
``n``, a context manager) in one of three modes:

- ``notebook``: ``tqdm.notebook`` widgets, for a person in JupyterLab (or
  Notebook 7, or VS Code) with ipywidgets installed;
- ``lines``: plain lines on stdout, ``desc: 12/40 (30%) elapsed 1m02s eta 2m25s``,
  at the start, every ~10% or ~30 s and at the end; for headless runs
  (papermill, ``thor_core.runs.notebooks.run_notebook``, CI logs, pipes);
- ``bar``: tqdm's text bar on stderr, for a terminal.

The rule (:func:`mode`), first match wins:

1. ``THOR_PROGRESS=notebook|bar|lines`` forces a mode (``auto`` or unset: the
   rule below). ``notebook`` needs an IPython kernel and ipywidgets, and is
   ``lines`` without them.
2. In an IPython kernel (``ipykernel`` imported and ``get_ipython()`` has a
   ``kernel``): ``notebook`` when the request being executed came from a
   person's frontend and ipywidgets imports, else ``lines``. A frontend is told
   by the ``cellId`` in the ``execute_request``'s metadata: JupyterLab 3+ and
   Notebook 7 (``CodeCell.execute`` in ``@jupyterlab/cells``) and VS Code
   (``cellExecution.ts``) send it; nbclient, which papermill runs, sends
   ``jupyter_client``'s ``KernelClient.execute`` with empty metadata, so every
   papermill run (a bare ``papermill a.ipynb b.ipynb`` included) gets lines.
   Papermill sets no environment variable or kernel-side marker of its own
   (nteract/papermill#481), and ``JPY_SESSION_NAME`` (set by jupyter_server for
   the kernels it starts) is inherited by a papermill run started from a
   notebook, so neither is used.
3. Outside a kernel: ``bar`` when stderr is a terminal, else ``lines``.

``run_notebook`` also starts its kernels with ``THOR_PROGRESS=lines``. A
JupyterLab without ipywidgets' extension (``jupyterlab_widgets``: not the
venv's, which has it) shows widgets as ``HBox(children=...)`` text: set
``THOR_PROGRESS=lines`` there.

Third-party bars (vLLM's weight loading, ``datasets``' saving and mapping, HF
downloads) use ``tqdm.auto``, which picks widgets in *any* kernel once
ipywidgets is installed and would leave widget outputs in an executed notebook.
So the kit's notebooks call :func:`steer_tqdm_auto` first (the top of the cell
after their parameters): in a headless kernel (rule 2 says ``lines``) it points
``tqdm.auto`` and ``tqdm.autonotebook`` at the text classes, and libraries
imported after that draw text bars on stderr, as in a terminal. Nothing does
it on import (``import thor_core`` patches nothing); outside a kernel (the
CLIs) and in a person's frontend it is a no-op.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

ENV = "THOR_PROGRESS"
MODES = ("notebook", "bar", "lines")
LINE_EVERY_S = 30.0  # a line at least this often ...
LINE_PARTS = 10  # ... and at every tenth of the total


def _kernel_shell() -> Any | None:
    """The IPython shell of a Jupyter kernel we run in, else None (plain Python, terminal IPython)."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return None
    shell = sys.modules["IPython"].get_ipython()
    return shell if getattr(shell, "kernel", None) is not None else None


def _request_metadata(shell: Any) -> dict:
    """Metadata of the ``execute_request`` being run (from any thread; ipykernel 6+)."""
    kernel = shell.kernel
    try:
        parent = kernel.get_parent("shell") if hasattr(kernel, "get_parent") else shell.parent_header
    except Exception:
        return {}
    return (parent or {}).get("metadata") or {}


def interactive_frontend(shell: Any | None = None) -> bool:
    """True when the current cell was run by a person's notebook frontend (its request carries a ``cellId``)."""
    shell = _kernel_shell() if shell is None else shell
    return shell is not None and bool(_request_metadata(shell).get("cellId"))


def _have_ipywidgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def mode() -> str:
    """``notebook``, ``bar`` or ``lines`` for a bar started now (the rule is in the module docstring)."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced not in ("", "auto") + MODES:
        raise ValueError(f"{ENV}={forced!r}: expected one of auto, {', '.join(MODES)}")
    forced = "" if forced == "auto" else forced
    shell = _kernel_shell()
    if forced == "notebook":
        return "notebook" if shell is not None and _have_ipywidgets() else "lines"
    if forced:
        return forced
    if shell is not None:
        return "notebook" if interactive_frontend(shell) and _have_ipywidgets() else "lines"
    return "bar" if _isatty(sys.stderr) else "lines"


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def bar(total: int | None, desc: str, unit: str = "it", disable: bool = False):
    """A progress bar for ``total`` items in the mode :func:`mode` picks (a no-op one when ``disable``)."""
    if disable:
        return _Null(total)
    chosen = mode()
    if chosen == "lines":
        return Lines(total, desc, unit)
    if chosen == "notebook":
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(total=total, desc=desc, unit=unit)


def format_seconds(s: float) -> str:
    """``42s``, ``1m02s``, ``2h05m``."""
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _Null:
    """The disabled bar: counts, prints nothing."""

    def __init__(self, total: int | None = None) -> None:
        self.total, self.n = total, 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Lines(_Null):
    """Plain progress lines on stdout: at the start, every ~10% or ~30 s, and once at the end."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", stream=None) -> None:
        super().__init__(total)
        self.desc, self.unit = desc, unit
        self.stream = stream
        self.start = self._last_time = time.monotonic()
        self._last_step = 0  # the tenth of the total last printed
        self._lock = threading.Lock()
        self._closed = False
        self._print(self.line())

    def line(self, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.start
        if not self.total:
            return f"{self.desc}: {self.n} {self.unit} elapsed {format_seconds(elapsed)}"
        head = f"{self.desc}: {self.n}/{self.total} ({100 * self.n // self.total}%) elapsed {format_seconds(elapsed)}"
        if self.n >= self.total:
            return head
        eta = format_seconds(elapsed / self.n * (self.total - self.n)) if self.n else "?"
        return f"{head} eta {eta}"

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.n += n
            now = time.monotonic()
            step = self.n * LINE_PARTS // self.total if self.total else self._last_step
            if self.total and self.n >= self.total:
                return  # the end line comes from close()
            if step > self._last_step or now - self._last_time >= LINE_EVERY_S:
                self._last_step, self._last_time = step, now
                self._print(self.line(now))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            stopped = self.total is not None and self.n < self.total
            self._print(self.line() + (" (stopped)" if stopped else ""))

    def _print(self, text: str) -> None:
        stream = self.stream or sys.stdout
        print(text, file=stream, flush=True)


def steer_tqdm_auto() -> bool:
    """In a headless kernel, make ``tqdm.auto``/``tqdm.autonotebook`` the text classes; True if it did.

    Only what is looked up after this call changes (``from tqdm.auto import
    tqdm`` in a module imported later, or ``tqdm.auto.tqdm(...)`` at call
    time), so call it before importing the libraries that draw bars; the kit's
    notebooks do, at the top of the cell after their parameters.
    """
    try:
        if _kernel_shell() is None or mode() == "notebook":
            return False
    except ValueError:  # a bad THOR_PROGRESS is reported by the first bar(), not here
        return False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TqdmWarning without ipywidgets, TqdmExperimentalWarning with
        import tqdm.asyncio
        import tqdm.auto
        import tqdm.autonotebook
        import tqdm.std
    tqdm.autonotebook.tqdm, tqdm.autonotebook.trange = tqdm.std.tqdm, tqdm.std.trange
    tqdm.auto.tqdm = tqdm.asyncio.tqdm  # what tqdm.auto is without a notebook; its trange looks it up
    return True
