"""SFT's settings: ``SFTParams`` (every setting of a run, with help text) and ``SFTNotebook`` (notebook 02's own keys).

Notebook 02 composes ``SFTParams``, ``thor_core.evaluation.before_after.CheckParams`` and ``SFTNotebook`` from one
flat profile (``params.split_params``); the CLI (``python -m thor_core.sft --config FILE``) reads the same profile
and keeps the ``SFTParams`` part.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from thor_core.evaluation.before_after import CheckParams
from thor_core.files import repo_path
from thor_core.models import DEFAULT_MODEL
from thor_core.params import read_yaml_mapping, split_params
from thor_core.tracking import HELP as REPORT_TO_HELP
from thor_core.tracking import ReportTo
from thor_core.tracking import problems as report_to_problems


def _f(default: Any, help: str, **kw: Any) -> Any:
    if callable(default):
        return field(default_factory=default, metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class SFTParams:
    """Settings of one SFT run; params/*/02_sft.yaml set the profiles.

    Defaults follow the paper (LR 2e-6, 1 epoch) or the authors' script (batch 128, 5% warm-up); each help
    text says which, and docs/METHOD.md's SFT table has both sources' values.
    """

    model: str = _f(DEFAULT_MODEL, "base model: embedded:..., a local folder or a hub id")
    dataset: str | None = _f(None, "TIRGen SFT dataset folder (null: <tirgen_dir>/sft)")
    tirgen_dir: str = _f("outputs/cpu/01_tirgen", "TIRGen run folder whose sft/ is used when dataset is null")
    output_dir: str = _f("outputs/adhoc/02_sft", "run folder: checkpoints, final/, adapter/, loss.jsonl, summary")
    method: Literal["full", "lora"] = _f("full", "full fine-tune (authors) or LoRA, merged into final/ on save")
    lora_r: int = _f(16, "LoRA rank")
    lora_alpha: int = _f(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = _f(0.0, "LoRA dropout")
    lora_target_modules: list[str] = _f(lambda: ["all-linear"], "modules LoRA adapts; ['all-linear'] for every linear")
    mask_tool_outputs: bool = _f(False, "exclude inserted ```output blocks from the loss (authors: false)")
    learning_rate: float = _f(2.0e-6, "peak learning rate (default: the paper's 2e-6)")
    lr_scheduler_type: Literal["constant_with_warmup", "constant", "linear", "cosine"] = _f(
        "constant_with_warmup",
        "learning-rate schedule (default: the authors' script, constant after warm-up; paper: constant)",
    )
    warmup_ratio: float = _f(0.05, "share of the steps spent warming up (default: the authors' script's 0.05)")
    num_train_epochs: float = _f(1.0, "epochs over the dataset (default: the paper's 1; the authors' script: 3)")
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: run the epochs)")
    global_batch_size: int = _f(
        128, "examples per optimizer step over all processes (default: the authors' script's 128; paper: 256)"
    )
    per_device_batch_size: int = _f(1, "examples per forward pass on one process; accumulation makes up the rest")
    max_length: int = _f(4096, "tokens per example, prompt included; longer ones are cut at the end (paper: 4096)")
    packing: bool = _f(False, "pack examples into padding-free rows of max_length (checked correct on CPU SDPA only)")
    model_dtype: Literal["float32", "bfloat16", "float16"] = _f("float32", "dtype the weights are loaded and kept in")
    bf16: bool = _f(False, "bf16 autocast (mixed precision) on top of model_dtype")
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass to save memory")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = _f("sdpa", "attention kernel")
    optim: str = _f("adamw_torch", "optimizer name as transformers knows it")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0: off)")
    seed: int = _f(0, "seed for the data order, LoRA init and dropout")
    limit: int | None = _f(None, "use the first N examples only (null: all)")
    logging_steps: int = _f(1, "optimizer steps between two loss.jsonl lines")
    save_steps: int = _f(50, "optimizer steps between two checkpoints (resume points)")
    save_total_limit: int | None = _f(2, "checkpoints kept (null: all)")
    overwrite: bool = _f(False, "redo a finished run from scratch (its checkpoints and final/ are deleted)")
    progress: Literal["auto", "bar", "lines"] = _f("auto", "tqdm bar, plain lines, or auto (lines when headless)")
    report_to: ReportTo | list[ReportTo] = _f("tensorboard", REPORT_TO_HELP)

    def __post_init__(self) -> None:
        counts = ("global_batch_size", "per_device_batch_size", "max_length", "save_steps", "logging_steps", "lora_r")
        problems = [f"{n} must be >= 1, got {getattr(self, n)}" for n in counts if getattr(self, n) < 1]
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.per_device_batch_size >= 1 and self.global_batch_size % self.per_device_batch_size:
            problems.append(
                f"global_batch_size {self.global_batch_size} must be a multiple of "
                f"per_device_batch_size {self.per_device_batch_size}"
            )
        problems += report_to_problems(self.report_to)
        if problems:
            raise ValueError("SFTParams: " + "; ".join(problems))

    def dataset_path(self) -> Path:
        return repo_path(self.dataset) if self.dataset else repo_path(self.tirgen_dir) / "sft"


@dataclass
class SFTNotebook:
    """Notebook 02's own keys (params/*/02_sft.yaml), beside ``SFTParams`` and the check's ``CheckParams``."""

    backend: Literal["auto", "hf", "vllm"] = field(default="hf", metadata={"help": "generation backend of the check"})
    show_trajectories: int = field(default=2, metadata={"help": "checkpoint answers rendered in the notebook"})
    run_dir: str | None = field(default=None, metadata={"help": "run folder (run_notebook sets it)"})


def load_params(config: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> SFTParams:
    """``SFTParams`` from a flat YAML file (optional) with ``overrides`` on top, validated.

    The file may be a notebook-02 profile: the keys of its check and display (``CheckParams``, ``SFTNotebook``) are
    read and set aside; any other unknown key is an error.
    """
    values = read_yaml_mapping(Path(config)) if config is not None else {}
    values.update(overrides or {})
    return split_params((SFTParams, CheckParams, SFTNotebook), values, str(config) if config else None)[0]
