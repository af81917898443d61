"""Shared fixtures, each built once per session: the embedded models, a sandbox and the smoke chain.

``tiny`` (``models.TINY_MODEL``: 2 random layers, the embedded Qwen's tokenizer) is for tests of mechanics;
the real embedded models stay where a test checks that something is generated or learned (docs/TESTING.md).
"""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from transformers import AutoTokenizer

    from thor_core.models import DEFAULT_MODEL, resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny random Qwen, fp32: for mechanics (masks, batching, updates, weight pushes)."""
    from thor_core.models import TINY_MODEL, load_model_and_tokenizer

    return load_model_and_tokenizer(TINY_MODEL)


@pytest.fixture(scope="session")
def smol():
    """(model, tokenizer) of the small embedded SmolLM2, fp32."""
    from thor_core.models import load_model_and_tokenizer

    return load_model_and_tokenizer("embedded:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def sandbox():
    from thor_core.sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(timeout_s=5.0)) as sb:
        yield sb


@dataclass
class SmokeChain:
    root: Path  # THOR_OUTPUTS/smoke: one folder per stage, REPORT.md
    done: subprocess.CompletedProcess

    def check(self) -> None:
        assert self.done.returncode == 0, self.done.stdout[-3000:] + self.done.stderr[-3000:]


@pytest.fixture(scope="session")
def smoke_chain(tmp_path_factory):
    """What `make smoke` runs, once per session: notebooks 01 -> 05 on the smoke profile (the embedded Qwen model,
    the real engine and sandbox) into a temp THOR_OUTPUTS. The demo's and each notebook's tests assert on its files
    instead of running the notebooks again."""
    from thor_core.files import REPO_ROOT

    outputs = tmp_path_factory.mktemp("smoke-chain")
    env = {**os.environ, "THOR_OUTPUTS": str(outputs)}
    # a hang guard, not a speed target (docs/TESTING.md has the measured times)
    done = subprocess.run([sys.executable, "-m", "thor_core.demo", "--profile", "smoke"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=4200)  # fmt: skip
    yield SmokeChain(outputs / "smoke", done)
    shutil.rmtree(outputs, ignore_errors=True)  # 02's and 03's checkpoints of the 0.5B model: ~10 GB
