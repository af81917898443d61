import dataclasses
import os
import subprocess
import sys

import pytest

from thor_core import models
from thor_core.models import DEFAULT_MODEL, ModelNotAvailable, load_model_and_tokenizer, resolve_model


def test_hub_id_offline_names_the_embedded_alternatives(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotAvailable, match="embedded:qwen2.5-coder-0.5b-instruct"):
        resolve_model("Qwen/Qwen2.5-Math-1.5B")


def test_unknown_names_are_explained(tmp_path):
    with pytest.raises(ModelNotAvailable, match="choose one of"):
        resolve_model("embedded:gpt-17")
    with pytest.raises(ModelNotAvailable, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelNotAvailable, match="not a local folder"):
        resolve_model("./no/such/folder")


def test_corrupt_package_files_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("THOR_MODEL_CACHE", str(tmp_path))
    real = models.EMBEDDED["smollm2-135m-instruct"]
    monkeypatch.setitem(models.EMBEDDED, "smollm2-135m-instruct", dataclasses.replace(real, sha256="0" * 64))
    with pytest.raises(ModelNotAvailable, match="does not match"):
        resolve_model("embedded:smollm2-135m-instruct")
    assert not any(tmp_path.glob("smollm2*/config.json"))


def test_local_folder_passes_through():
    folder = resolve_model(DEFAULT_MODEL)
    assert resolve_model(str(folder)) == folder


@pytest.mark.model
def test_two_processes_converting_at_once_share_one_result(tmp_path):
    env = {**os.environ, "THOR_MODEL_CACHE": str(tmp_path)}
    code = "from thor_core.models import resolve_model; print(resolve_model('embedded:smollm2-135m-instruct'))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(paths) == 1
    leftovers = [p.name for p in tmp_path.iterdir() if "staging" in p.name]
    assert leftovers == []


@pytest.mark.model
def test_default_model_generates_from_the_cache():
    weights = resolve_model(DEFAULT_MODEL) / "model.safetensors"  # converted now or earlier
    before = weights.stat().st_mtime_ns
    model, tokenizer = load_model_and_tokenizer(DEFAULT_MODEL)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hello."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip()
    assert weights.stat().st_mtime_ns == before  # the second load reused the converted folder


@pytest.mark.model
def test_the_tiny_model_is_a_seeded_two_layer_qwen_built_the_same_twice(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    cached = resolve_model(models.TINY_MODEL)
    models._build_tiny(tmp_path / "again")  # a second build from scratch: the same weights, bit for bit
    a, b = load_file(str(cached / "model.safetensors")), load_file(str(tmp_path / "again" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    config, real = AutoConfig.from_pretrained(cached), AutoConfig.from_pretrained(resolve_model(DEFAULT_MODEL))
    assert config.num_hidden_layers == 2 and config.vocab_size == real.vocab_size and config.dtype == real.dtype
    tiny_tok, real_tok = (
        AutoTokenizer.from_pretrained(cached),
        AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL)),
    )
    assert tiny_tok.get_vocab() == real_tok.get_vocab() and tiny_tok.chat_template == real_tok.chat_template
