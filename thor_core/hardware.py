"""This machine: CPU model and the speed flags that change run times several-fold, memory, GPUs; whether bf16 is fast.

Covered: :func:`machine` (recorded in every manifest and printed by ``make test``), :func:`fast_bf16` and
:func:`bf16_autocast` (the trainers' and the vLLM backend's precision rule, docs/DESIGN.md "Precision").

Not covered: GPU properties beyond their names (torch answers those where it is loaded).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


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
# of this project ran the same demo stage several-fold apart (docs/BENCHMARKS.md, "Machines"), so a wall time
# means little without them
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def fast_bf16(device: str, cpu_flags: list[str] | None = None) -> bool:
    """Whether bf16 autocast is fast on ``device`` ("cuda" or "cpu"; ``cpu_flags``: None reads this machine's).

    A GPU with bf16, or a CPU with bf16 instructions (avx512_bf16 or amx_bf16). Without them torch emulates bf16
    matmuls on the CPU, tens of times slower than fp32 for a linear layer's forward + backward (benchmarks/cpu_bf16.py;
    the numbers: docs/BENCHMARKS.md, "bf16 autocast on the CPU"). Arm CPUs are treated as without.
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
    """``cpu_model`` and ``cpu_flags`` (those of ``SPEED_FLAGS`` it has) from /proc/cpuinfo, where there is one."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name"), "cpu_flags": [f for f in SPEED_FLAGS if f in flags]}
