"""Shared fixtures: the embedded models and a sandbox, built once per session."""

import pytest


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from transformers import AutoTokenizer

    from thor_core.models import DEFAULT_MODEL, resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))


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
