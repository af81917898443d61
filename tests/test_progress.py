"""thor_core.progress: plain lines with an ETA, the choice of mode, and a real headless papermill run.

Covered: the lines (start, every tenth or 30 s, end; ETA; a stopped run
marked), the rule (THOR_PROGRESS override, an interactive frontend's cellId vs
a headless kernel's request, terminal vs pipe), tqdm.auto pointed at the text
classes in a headless kernel only and only when asked (not by ``import thor_core``), run_notebook's kernel environment, and an
executed notebook (bare ``python -m papermill``, and ``run_notebook`` with
THOR_PROGRESS=notebook outside) with our lines and no widget, no TqdmWarning,
from our bar and from a library's ``tqdm.auto`` bar; and a real kernel sent an
``execute_request`` with JupyterLab's ``cellId`` showing a widget.
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import types

import nbformat
import pytest

import thor_core
from thor_core import progress


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress.time, "monotonic", c)
    return c


def test_lines_every_tenth_with_an_eta(clock):
    out = io.StringIO()
    bar = progress.Lines(40, "rollouts (hf)", "traj", stream=out)
    for _ in range(40):
        clock.t += 62 / 12  # 12 items in 62 s
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "rollouts (hf): 0/40 (0%) elapsed 0s eta ?"
    assert "rollouts (hf): 12/40 (30%) elapsed 1m02s eta 2m25s" in lines
    assert len(lines) == 1 + 9 + 1  # start, 10% .. 90%, end
    assert lines[-1] == "rollouts (hf): 40/40 (100%) elapsed 3m27s"
    assert all("\r" not in line and "HBox" not in line for line in lines)


def test_lines_every_30_s_between_tenths_and_a_stopped_run(clock):
    out = io.StringIO()
    with progress.Lines(1000, "TIRGen attempts", "attempt", stream=out) as bar:
        for _ in range(3):
            clock.t += 31
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines[1:4] == [
        "TIRGen attempts: 1/1000 (0%) elapsed 31s eta 8h36m",
        "TIRGen attempts: 2/1000 (0%) elapsed 1m02s eta 8h35m",
        "TIRGen attempts: 3/1000 (0%) elapsed 1m33s eta 8h35m",
    ]
    assert lines[-1].endswith("(stopped)") and len(lines) == 5


def test_format_seconds():
    assert [progress.format_seconds(s) for s in (0, 42.4, 62, 3599, 7500)] == ["0s", "42s", "1m02s", "59m59s", "2h05m"]


# ------------------------------------------------------------ the rule


def fake_kernel(monkeypatch, metadata: dict | None) -> None:
    """Pretend to run in an ipykernel whose current request carries ``metadata``."""
    kernel = types.SimpleNamespace(get_parent=lambda channel=None: {"header": {}, "metadata": metadata or {}})
    shell = types.SimpleNamespace(kernel=kernel)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", ipython)


@pytest.fixture
def no_override(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setattr(progress, "_have_ipywidgets", lambda: True)


def test_interactive_frontend_gets_widgets_headless_kernel_gets_lines(monkeypatch, no_override):
    fake_kernel(monkeypatch, {"cellId": "5b1c", "deletedCells": [], "recordTiming": False})  # JupyterLab's
    assert progress.mode() == "notebook"
    fake_kernel(monkeypatch, {})  # nbclient (papermill) sends no metadata
    assert progress.mode() == "lines"
    assert isinstance(progress.bar(3, "x"), progress.Lines)
    fake_kernel(monkeypatch, {"cellId": "5b1c"})
    monkeypatch.setattr(progress, "_have_ipywidgets", lambda: False)
    assert progress.mode() == "lines"


def test_outside_a_kernel_terminal_or_pipe(monkeypatch, no_override):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", types.SimpleNamespace(isatty=lambda: True))
    assert progress.mode() == "bar"
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress.mode() == "lines"


def test_override(monkeypatch, no_override):
    fake_kernel(monkeypatch, {"cellId": "5b1c"})
    for forced in ("lines", "bar", "notebook"):
        monkeypatch.setenv(progress.ENV, forced)
        assert progress.mode() == forced
    monkeypatch.setenv(progress.ENV, "auto")
    assert progress.mode() == "notebook"
    monkeypatch.setenv(progress.ENV, "widgets")
    with pytest.raises(ValueError, match="THOR_PROGRESS='widgets'.*auto, notebook, bar, lines"):
        progress.mode()
    monkeypatch.delitem(sys.modules, "ipykernel")
    monkeypatch.setenv(progress.ENV, "notebook")
    assert progress.mode() == "lines"  # widgets need a kernel


def test_disabled_bar_prints_nothing(capsys, monkeypatch):
    monkeypatch.setenv(progress.ENV, "lines")
    with progress.bar(5, "quiet", disable=True) as bar:
        bar.update(5)
    assert bar.n == 5 and capsys.readouterr().out == ""


def test_tqdm_auto_steered_in_a_headless_kernel_only(monkeypatch, no_override):
    import tqdm.asyncio
    import tqdm.auto
    import tqdm.autonotebook
    import tqdm.std

    for module in (tqdm.auto, tqdm.autonotebook):  # restored after the test
        monkeypatch.setattr(module, "tqdm", module.tqdm)
        monkeypatch.setattr(module, "trange", module.trange)
    fake_kernel(monkeypatch, {"cellId": "5b1c"})
    assert not progress.steer_tqdm_auto()
    monkeypatch.delitem(sys.modules, "ipykernel")
    assert not progress.steer_tqdm_auto()
    fake_kernel(monkeypatch, {})
    untouched = tqdm.auto.tqdm
    importlib.reload(thor_core)  # importing the package patches nothing: the notebooks call steer_tqdm_auto
    assert tqdm.auto.tqdm is untouched
    assert progress.steer_tqdm_auto()
    assert tqdm.auto.tqdm is tqdm.asyncio.tqdm and tqdm.autonotebook.tqdm is tqdm.std.tqdm


def test_run_notebook_kernel_env(monkeypatch):
    from thor_core.runs.notebooks import _kernel_env

    monkeypatch.setenv(progress.ENV, "notebook")
    with _kernel_env({progress.ENV: "lines", "THOR_TEST_UNSET": "1"}):
        assert os.environ[progress.ENV] == "lines" and os.environ["THOR_TEST_UNSET"] == "1"
    assert os.environ[progress.ENV] == "notebook" and "THOR_TEST_UNSET" not in os.environ


# ------------------------------------------------------------ a real headless kernel

CELL_OURS = """\
from thor_core import progress
progress.steer_tqdm_auto()  # as the kit's notebooks do first
bar = progress.bar(20, "demo work", "item")
for _ in range(20):
    bar.update(1)
bar.close()
"""
CELL_LIBRARY = """\
from tqdm.auto import tqdm  # what vLLM, datasets and HF hub do
for _ in tqdm(range(3), desc="library bar"):
    pass
"""


def tiny_notebook(path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL_OURS), nbformat.v4.new_code_cell(CELL_LIBRARY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def check_executed(path) -> None:
    """Our plain lines, tqdm's text bar for the library, and no widget anywhere."""
    executed = nbformat.read(path, as_version=4)
    raw = nbformat.writes(executed)
    assert "application/vnd.jupyter.widget" not in raw and "HBox" not in raw
    assert "TqdmWarning" not in raw and "IProgress" not in raw
    assert "widgets" not in executed.metadata
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type in ("display_data", "error")]
    ours = "".join(o.get("text", "") for o in executed.cells[0].outputs if o.get("name") == "stdout")
    assert ours.splitlines()[0] == "demo work: 0/20 (0%) elapsed 0s eta ?"
    assert "eta" in ours and ours.splitlines()[-1].startswith("demo work: 20/20 (100%) elapsed")
    library = "".join(o.get("text", "") for o in executed.cells[1].outputs)
    assert "library bar" in library and "3/3" in library  # tqdm's text bar on stderr, not a widget


@pytest.mark.notebook
def test_bare_papermill_gets_lines_and_no_widgets(tmp_path):
    src, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    tiny_notebook(src)
    env = {k: v for k, v in os.environ.items() if k not in (progress.ENV, "JPY_SESSION_NAME")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "papermill", str(src), str(out)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    check_executed(out)


@pytest.mark.notebook
def test_run_notebook_gets_lines_even_when_widgets_are_forced_outside(tmp_path, monkeypatch):
    from thor_core.runs.notebooks import run_notebook

    monkeypatch.setenv(progress.ENV, "notebook")  # a JupyterLab user's setting must not reach executed notebooks
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    tiny_notebook(tmp_path / "tiny.ipynb")
    executed = run_notebook(tmp_path / "tiny.ipynb", out_dir=tmp_path / "run")
    check_executed(executed)
    assert os.environ[progress.ENV] == "notebook"


@pytest.mark.notebook
def test_a_real_kernel_asked_like_jupyterlab_shows_a_widget(monkeypatch):
    """An execute_request with JupyterLab's ``cellId`` metadata: widgets, from a thread too; tqdm.auto untouched."""
    from jupyter_client.manager import start_new_kernel

    code = (
        "import threading\nfrom thor_core import progress\nmodes = [progress.mode()]\n"
        "t = threading.Thread(target=lambda: modes.append(progress.mode())); t.start(); t.join()\n"
        "b = progress.bar(3, 'x'); b.update(3); b.close()\nimport tqdm.auto\n"
        "print(modes, type(b).__module__, tqdm.auto.tqdm.__module__)"
    )
    monkeypatch.delenv(progress.ENV, raising=False)  # the kernel inherits our environment
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False}
        msg = kc.session.msg("execute_request", content, metadata={"cellId": "5b1c", "deletedCells": []})
        kc.shell_channel.send(msg)
        seen = []
        while True:
            m = kc.get_iopub_msg(timeout=60)
            if m["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                continue
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
            seen.append(m)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(m["content"].get("text", "") for m in seen if m["msg_type"] == "stream")
    assert "['notebook', 'notebook'] tqdm.notebook tqdm.auto" in text, text
    assert any("application/vnd.jupyter.widget-view+json" in m["content"].get("data", {}) for m in seen)
