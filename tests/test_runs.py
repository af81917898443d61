"""Tests for thor_core.params (parameter validation), thor_core.runs (run manifests, model hashing)
and thor_core.runs.notebooks (headless notebook runs, marked ``notebook``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import nbformat
import pytest

from thor_core import files, models, params, runs
from thor_core.files import REPO_ROOT
from thor_core.models import model_hash
from thor_core.params import ParamsError, load_params_file, load_profile, params_from_namespace, validate_params
from thor_core.runs import Run, RunExistsError, start_run
from thor_core.runs import notebooks as notebook_runs
from thor_core.runs.notebooks import NotebookError, run_notebook

FIXTURE = Path(__file__).parent / "fixtures" / "params_echo.ipynb"


@dataclass
class Demo:
    model: str = field(default="embedded:smollm2", metadata={"help": "model name"})
    n: int = field(default=4, metadata={"help": "samples"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature"})
    greedy: bool = field(default=False, metadata={"help": "greedy decoding"})
    backend: Literal["hf", "vllm", "openai"] = field(default="hf", metadata={"help": "rollout backend"})
    limit: int | None = field(default=None, metadata={"help": "max problems"})
    benchmarks: list[str] = field(default_factory=lambda: ["math500"], metadata={"help": "benchmarks"})


def problems(schema, values) -> list[str]:
    with pytest.raises(ParamsError) as e:
        validate_params(schema, values)
    return e.value.problems


# ---------------------------------------------------------------- validation


def test_valid_values_and_defaults():
    p = validate_params(Demo, {"n": 8, "temperature": 1, "backend": "vllm", "limit": 5, "benchmarks": ["aime24"]})
    assert p == Demo(n=8, temperature=1.0, backend="vllm", limit=5, benchmarks=["aime24"])
    assert isinstance(p.temperature, float)
    assert validate_params(Demo, {}) == Demo()


def test_unknown_key_suggests_closest():
    (msg,) = problems(Demo, {"temprature": 0.5})
    assert "temprature" in msg and "did you mean 'temperature'" in msg


def test_unknown_key_without_match_lists_known():
    (msg,) = problems(Demo, {"zzz": 1})
    assert "known: model, n, temperature" in msg


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("n", "4", "expected int"),
        ("n", 4.0, "expected int"),
        ("n", True, "expected int"),
        ("greedy", 1, "expected bool"),
        ("temperature", "hot", "expected float"),
        ("temperature", False, "expected float"),
        ("model", 3, "expected str"),
    ],
)
def test_wrong_type_names_field_value_and_type(key, value, expected):
    (msg,) = problems(Demo, {key: value})
    assert msg.startswith(f"{key}: got {value!r} ({type(value).__name__})") and expected in msg


def test_string_bool_is_rejected_with_hint():
    (msg,) = problems(Demo, {"greedy": "true"})
    assert "greedy: got 'true' (str); expected bool" in msg and "without quotes" in msg


def test_yaml_pitfall_hints():
    assert "write 1.0e-5" in problems(Demo, {"temperature": "1e-5"})[0]
    assert "drop the quotes" in problems(Demo, {"n": "4"})[0]
    assert "quote it" in problems(Demo, {"model": False})[0]


def test_literal_choice():
    (msg,) = problems(Demo, {"backend": "vlm"})
    assert "expected one of 'hf', 'vllm', 'openai'" in msg and "did you mean 'vllm'" in msg


def test_optional():
    assert validate_params(Demo, {"limit": None}).limit is None
    (msg,) = problems(Demo, {"limit": "10"})
    assert "expected int or null" in msg

    @dataclass
    class Opt:
        dtype: Optional[Literal["bf16", "fp32"]] = None  # noqa: UP045 - typing.Optional must work too
        rate: Optional[float] = None  # noqa: UP045

    assert validate_params(Opt, {"dtype": None, "rate": 1}) == Opt(None, 1.0)
    (msg,) = problems(Opt, {"dtype": "bf32"})
    assert "expected one of 'bf16', 'fp32' or null" in msg


def test_list_of_str():
    (msg,) = problems(Demo, {"benchmarks": "math500"})
    assert "expected list of str" in msg
    (msg,) = problems(Demo, {"benchmarks": ["math500", 24]})
    assert "item 1 is 24 (int)" in msg


def test_all_errors_reported_at_once():
    with pytest.raises(ParamsError) as e:
        validate_params(Demo, {"n": "x", "greedy": "yes", "backend": "tpu", "sead": 1}, source="p.yaml")
    assert len(e.value.problems) == 4
    text = str(e.value)
    assert text.startswith("4 invalid parameter(s) for Demo (from p.yaml):")
    for name in ("n:", "greedy:", "backend:", "sead:"):
        assert f"  - {name}" in text


def test_required_field_missing():
    @dataclass
    class Needs:
        path: str

    assert problems(Needs, {}) == ["path: missing (required, expected str)"]


def test_unsupported_schema_types_fail_loudly():
    @dataclass
    class Bad:
        mapping: dict = field(default_factory=dict)

    with pytest.raises(TypeError, match="Bad.mapping: unsupported parameter type"):
        validate_params(Bad, {})
    with pytest.raises(TypeError, match="must be a dataclass"):
        validate_params(Demo(), {})


def test_params_from_namespace_picks_schema_fields():
    namespace = {"n": 2, "greedy": True, "__name__": "__main__", "np": object(), "other": "x"}
    assert params_from_namespace(Demo, namespace) == Demo(n=2, greedy=True)
    with pytest.raises(ParamsError, match="greedy: got 'False'"):
        params_from_namespace(Demo, {"greedy": "False"})


# ---------------------------------------------------------------- files


def test_load_params_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("n: 16\ngreedy: true\nbenchmarks: [aime24, aime25]\n")
    assert load_params_file(Demo, path) == Demo(n=16, greedy=True, benchmarks=["aime24", "aime25"])
    path.write_text("")
    assert load_params_file(Demo, path) == Demo()
    path.write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        load_params_file(Demo, path)
    path.write_text("greedy: 'true'\n")
    with pytest.raises(ParamsError, match=r"from .*p\.yaml"):
        load_params_file(Demo, path)
    with pytest.raises(FileNotFoundError):
        load_params_file(Demo, tmp_path / "missing.yaml")


def test_load_profile(tmp_path):
    (tmp_path / "smoke").mkdir()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "smoke" / "04_eval.yaml").write_text("n: 1\n")
    assert load_profile(Demo, "smoke", "notebooks/04_eval.ipynb", params_root=tmp_path).n == 1
    with pytest.raises(FileNotFoundError, match="no parameter profile 'gpu-h100'.*available: cpu, smoke"):
        load_profile(Demo, "gpu-h100", "04_eval", params_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="no 05_figs.yaml.*it has: 04_eval"):
        load_profile(Demo, "smoke", "05_figs", params_root=tmp_path)


def test_repo_root_and_outputs_override(tmp_path):
    assert (REPO_ROOT / "pyproject.toml").is_file()
    assert files.repo_path("outputs/x") == REPO_ROOT / "outputs/x"
    assert files.repo_path(tmp_path) == tmp_path
    code = "from thor_core.files import OUTPUTS; print(OUTPUTS)"
    env = {**os.environ, "THOR_OUTPUTS": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path)
    env.pop("THOR_OUTPUTS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(REPO_ROOT / "outputs")


# ---------------------------------------------------------------- runs


def test_manifest_fields(tmp_path):
    run = start_run("exp/one", Demo(n=3), out_root=tmp_path, seed=7, note="hello")
    assert run.dir == tmp_path / "exp" / "one"
    m = json.loads(run.manifest_path.read_text())
    assert m["name"] == "exp/one" and m["status"] == "running" and m["seed"] == 7 and m["note"] == "hello"
    assert m["params"] == dataclasses.asdict(Demo(n=3))
    assert set(m["git"]) == {"commit", "dirty"}
    expected = {"python", "torch", "transformers", "trl", "vllm", "datasets", "math-verify", "papermill"}
    assert expected | {"sympy", "numpy"} == set(m["packages"])
    assert m["packages"]["papermill"] and m["packages"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert m["model"] is None and m["host"] and m["started_at"]

    m = run.finish("ok", metrics={"avg@1": 0.5})
    on_disk = json.loads(run.manifest_path.read_text())
    assert on_disk == m
    assert on_disk["status"] == "ok" and on_disk["metrics"] == {"avg@1": 0.5}
    assert on_disk["finished_at"] >= on_disk["started_at"] and on_disk["duration_s"] >= 0
    with pytest.raises(ValueError, match="status must be"):
        run.finish("done")


def test_package_missing_is_null(monkeypatch):
    monkeypatch.setitem(runs.KEY_PACKAGES, "vllm", ("no-such-dist-xyz",))
    assert runs.package_versions()["vllm"] is None


def test_existing_run_needs_resume(tmp_path):
    start_run("r", {"a": 1}, out_root=tmp_path).finish("failed", error="boom")
    with pytest.raises(RunExistsError, match="already exists; resume it"):
        start_run("r", {"a": 1}, out_root=tmp_path)
    (tmp_path / "r" / "keep.jsonl").write_text("{}\n")
    run = start_run("r", {"a": 2}, out_root=tmp_path, resume=True)
    assert (run.dir / "keep.jsonl").exists()
    assert run.manifest["params"] == {"a": 2}
    assert [p["status"] for p in run.manifest["previous_runs"]] == ["failed"]


def test_bad_run_names(tmp_path):
    for name in ("../escape", "/abs", ""):
        with pytest.raises(ValueError, match="run name"):
            start_run(name, {}, out_root=tmp_path)
    with pytest.raises(ValueError, match="clash"):
        start_run("x", {}, out_root=tmp_path, seed=1, status="ok")


def test_run_as_context_manager(tmp_path):
    with pytest.raises(KeyError), start_run("ctx", {}, out_root=tmp_path) as run:
        raise KeyError("missing")
    m = json.loads(run.manifest_path.read_text())
    assert m["status"] == "failed" and m["error"] == "KeyError: 'missing'"
    assert isinstance(run, Run)


def test_manifest_write_is_atomic(tmp_path, monkeypatch):
    run = start_run("atomic", {}, out_root=tmp_path)
    before = run.manifest_path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        run.finish("ok")
    assert run.manifest_path.read_text() == before  # old manifest intact
    assert sorted(p.name for p in run.dir.iterdir()) == ["manifest.json"]  # temp file cleaned up


# ---------------------------------------------------------------- model hash


def test_model_hash_file_and_folder(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "model-00001.safetensors").write_bytes(b"a" * 1000)
    (folder / "sub" / "extra.safetensors").write_bytes(b"b" * 10)
    (folder / "config.json").write_text("{}")

    single = model_hash(folder / "model-00001.safetensors")
    assert single["sha256"] == hashlib.sha256(b"a" * 1000).hexdigest()

    h = model_hash(folder)
    files = {
        "model-00001.safetensors": hashlib.sha256(b"a" * 1000).hexdigest(),
        "sub/extra.safetensors": hashlib.sha256(b"b" * 10).hexdigest(),
    }
    assert h["files"] == files
    listing = "".join(f"{files[n]}  {n}\n" for n in sorted(files))
    assert h["sha256"] == hashlib.sha256(listing.encode()).hexdigest()

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors"):
        model_hash(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="model path not found"):
        model_hash(tmp_path / "nope")


def test_model_hash_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x" * 100)
    hashed = []
    real = models._file_sha256
    monkeypatch.setattr(models, "_file_sha256", lambda p: hashed.append(p.name) or real(p))

    first = model_hash(tmp_path)
    assert hashed == ["model.safetensors"]
    cache = json.loads((tmp_path / models.HASH_CACHE_NAME).read_text())
    assert cache["model.safetensors"]["size"] == 100

    assert model_hash(tmp_path) == first and hashed == ["model.safetensors"]  # from the cache

    weights.write_bytes(b"y" * 100)  # same size, new mtime
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert model_hash(tmp_path)["sha256"] != first["sha256"] and len(hashed) == 2


def test_start_run_records_model_hash(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"w")
    run = start_run("with-model", {}, out_root=tmp_path / "out", model_path=tmp_path / "m")
    assert run.manifest["model"]["files"] == {"model.safetensors": hashlib.sha256(b"w").hexdigest()}


# ---------------------------------------------------------------- notebooks


def test_unknown_notebook_parameter_is_caught_before_running(tmp_path):
    with pytest.raises(ParamsError, match="gretting: not in the notebook's parameters cell.*'greeting'"):
        run_notebook(FIXTURE, overrides={"gretting": "hi"}, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="not both"):
        run_notebook(FIXTURE, profile="smoke", params_file=tmp_path / "p.yaml")
    assert notebook_runs.main([str(FIXTURE), "-p", "gretting=hi", "--out-dir", str(tmp_path / "cli")]) == 2


@pytest.mark.notebook
def test_run_notebook_ok(tmp_path):
    params_yaml = tmp_path / "params.yaml"
    params_yaml.write_text("greeting: hi\nrepeat: 2\nscale: 3\ntags: [a]\n")
    executed = run_notebook(FIXTURE, params_file=params_yaml, overrides={"repeat": 3}, out_dir=tmp_path / "run")

    assert executed == tmp_path / "run" / "params_echo.ipynb"
    nb = nbformat.read(executed, as_version=4)
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "hi hi hi" in outputs

    echo = json.loads((tmp_path / "run" / "echo.json").read_text())
    assert echo["run_dir"] == str(tmp_path / "run")  # injected: the notebook declares run_dir
    assert echo["scale"] == 3.0 and echo["tags"] == ["a"] and echo["mode"] == "fast"
    assert echo["cwd"] == str(FIXTURE.parent)

    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["status"] == "ok" and m["params"] == {"greeting": "hi", "repeat": 3, "scale": 3, "tags": ["a"]}
    assert m["params_file"] == str(params_yaml) and m["executed_notebook"] == str(executed)
    assert m["all_params"] == {  # the notebook's defaults under the given values, as the notebook ran them
        **m["params"], "mode": "fast", "limit": None, "fail": False, "run_dir": str(tmp_path / "run")
    }  # fmt: skip
    assert m["inputs"] == {"models": {}, "datasets": {}, "seeds": {}} and m["machine"]["cpus"] >= 1
    assert not [p for p in FIXTURE.parent.iterdir() if p.is_socket()]  # the kernel's sockets live elsewhere


@pytest.mark.notebook
def test_run_notebook_failure_names_cell(tmp_path, monkeypatch):
    (tmp_path / "params" / "smoke").mkdir(parents=True)
    (tmp_path / "params" / "smoke" / "params_echo.yaml").write_text("fail: true\n")
    monkeypatch.setattr(params, "PARAMS", tmp_path / "params")
    monkeypatch.setattr(files, "OUTPUTS", tmp_path / "outputs")

    with pytest.raises(NotebookError) as e:
        run_notebook(FIXTURE, profile="smoke")
    run_dir = tmp_path / "outputs" / "smoke" / "params_echo"
    assert "`if p.fail:` raised RuntimeError: asked to fail" in str(e.value)
    assert (run_dir / "params_echo.ipynb").is_file()
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and m["profile"] == "smoke" and m["name"] == "smoke/params_echo"
    assert m["error"]["type"] == "RuntimeError" and m["error"]["cell_source"].startswith("if p.fail:")

    # Bad types are caught inside the notebook by params_from_namespace; via the CLI this time.
    code = notebook_runs.main([str(FIXTURE), "--profile", "smoke", "--resume", "-p", "mode=fsat", "-p", "repeat='2'"])
    assert code == 1
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and m["error"]["type"] == "ParamsError"
    assert "mode: got 'fsat'" in m["error"]["message"] and "repeat: got '2'" in m["error"]["message"]
    assert [p["status"] for p in m["previous_runs"]] == ["failed"]


def test_a_flat_profile_splits_into_its_schemas_and_every_problem_is_named():
    @dataclass
    class Stage:
        n: int = 1
        seed: int = 0

    @dataclass
    class Check:
        k: int = 2
        seed: int = 0

    stage, check = params.split_params((Stage, Check), {"n": 3, "k": 4, "seed": 7})
    assert stage == Stage(n=3, seed=7) and check == Check(k=4, seed=7)  # a shared key goes to both
    with pytest.raises(ParamsError) as e:
        params.split_params((Stage, Check), {"nn": 3, "k": "many"}, "p.yaml")
    assert "nn: unknown parameter (did you mean 'n'?)" in str(e.value) and "k: got 'many'" in str(e.value)
    assert "Stage + Check (from p.yaml)" in str(e.value)


def test_jsonl_rows_survive_a_torn_last_line_and_name_a_torn_middle_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert files.read_jsonl_rows(path) == []
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert files.read_jsonl_rows(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        files.read_jsonl_rows(path)


def test_a_resumable_folder_refuses_other_settings_naming_them(tmp_path):
    path = tmp_path / "run" / "settings.json"
    files.check_settings(path, {"lr": 1, "loop": {"k": 2}}, "records", "start over")
    files.check_settings(path, {"lr": 1, "loop": {"k": 2}}, "records", "start over")
    with pytest.raises(ValueError, match=r"holds records made with other settings \(loop.k, lr differ.*start over"):
        files.check_settings(path, {"lr": 2, "loop": {"k": 3}}, "records", "start over")
    files.check_settings(path, {"lr": 1, "loop": {"k": 2}, "sha": "x"}, "records", "start over", optional=("sha",))


def test_an_old_profile_key_that_moved_says_where():
    from thor_core.tirgen.config import TIRGenParams

    with pytest.raises(ParamsError, match="mask_tool_outputs: unknown parameter \\(moved to SFT"):
        validate_params(TIRGenParams, {"mask_tool_outputs": True})
