"""thor_core.runs.provenance: what a stage's manifest says it read."""

from __future__ import annotations

from pathlib import Path

from thor_core import hardware, models
from thor_core.models import model_hash
from thor_core.runs import provenance


def _model(folder, content: bytes):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(content)
    (folder / "config.json").write_text("{}")
    return folder


def _dataset(folder, content: bytes, fingerprint: str):
    folder.mkdir(parents=True)
    (folder / "data-00000-of-00001.arrow").write_bytes(content)
    (folder / "state.json").write_text(f'{{"_fingerprint": "{fingerprint}"}}')
    return folder


def test_models_datasets_and_seeds_named_by_the_parameters(tmp_path):
    sft = _model(tmp_path / "02_sft" / "final", b"weights")
    _dataset(tmp_path / "01_tirgen" / "sft", b"rows", "a")
    params = {
        "model": str(sft),
        "fallback_model": "Qwen/Qwen2.5-Math-7B",  # a hub id: recorded, not downloaded
        "rungs": {"T3": str(sft), "T5": str(tmp_path / "03_rl" / "final")},  # T5 not made yet
        "tirgen_dir": str(tmp_path / "01_tirgen"),
        "seed": 3,
        "heldout_seed": 9001,
        "steps": 4,
    }
    got = provenance.inputs(params)
    assert got["models"]["model"]["sha256"] == model_hash(sft)["sha256"] == got["models"]["rungs.T3"]["sha256"]
    assert got["models"]["fallback_model"] == {"name": "Qwen/Qwen2.5-Math-7B", "hub_id": "Qwen/Qwen2.5-Math-7B"}
    assert got["models"]["rungs.T5"]["missing"] is True
    assert got["datasets"]["tirgen_dir"]["sha256"] == provenance.dataset_hash(tmp_path / "01_tirgen" / "sft")["sha256"]
    assert got["seeds"] == {"seed": 3, "heldout_seed": 9001}
    (tmp_path / "torn").mkdir()  # a folder without weights (an unfinished run): recorded, not raised
    assert "no *.safetensors" in provenance.inputs({"model": str(tmp_path / "torn")})["models"]["model"]["unhashed"]
    assert "unknown embedded model" in provenance.inputs({"model": "embedded:nope"})["models"]["model"]["unhashed"]


def test_a_dataset_hash_follows_the_rows_not_the_fingerprint(tmp_path):
    a = provenance.dataset_hash(_dataset(tmp_path / "a", b"rows", "fingerprint-1"))
    b = provenance.dataset_hash(_dataset(tmp_path / "b", b"rows", "fingerprint-2"))
    c = provenance.dataset_hash(_dataset(tmp_path / "c", b"other rows", "fingerprint-1"))
    assert a["sha256"] == b["sha256"] != c["sha256"]
    assert provenance.dataset_hash(tmp_path / "nothing")["missing"] is True


def test_machine():
    m = hardware.machine()
    assert m["cpus"] >= 1 and m["memory_gib"] > 0
    if Path("/proc/cpuinfo").exists():  # Linux: the CPU model and the speed-relevant flags it has
        assert m["cpu_model"] and set(m["cpu_flags"]) <= set(hardware.SPEED_FLAGS)
        flags = Path("/proc/cpuinfo").read_text()
        assert ("avx2" in flags.split()) == ("avx2" in m["cpu_flags"])


def test_model_fingerprint_follows_the_weights(tmp_path):
    folder = _model(tmp_path / "final", b"weights")
    first = models.model_fingerprint(str(folder))
    assert first == model_hash(folder)["sha256"]
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert models.model_fingerprint(str(folder)) != first
    assert models.model_fingerprint("Qwen/Qwen2.5-Math-7B") == "Qwen/Qwen2.5-Math-7B"  # a hub id: its id


def test_bf16_autocast_only_where_the_cpu_has_bf16_instructions(capsys):
    assert hardware.bf16_autocast(True, "cpu", ["avx2", "avx512f", "avx512_bf16"])
    assert hardware.bf16_autocast(True, "cpu", ["avx2", "amx_bf16"])
    assert not hardware.bf16_autocast(False, "cpu", ["avx512_bf16"]) and capsys.readouterr().out == ""
    assert not hardware.bf16_autocast(True, "cpu", ["avx2", "avx512f"])
    note = capsys.readouterr().out
    assert "no bf16 instructions" in note and "uses fp32" in note
