"""SFT cold start (THOR stage 2): a thin layer over TRL's ``SFTTrainer``.

Covered:

- ``SFTParams``: every setting, with help text, loadable from a YAML profile
  and from the command line (``python -m thor_core.sft --config FILE
  [--name value ...]``; the open-r1 recipe pattern), checked by
  ``thor_core.params.validate_params`` (bad names and values are named). One
  function, ``sft_config``, maps it onto ``trl.SFTConfig`` and overrides
  TRL's defaults that do not suit us (``max_length`` 1024, gradient
  checkpointing on, bf16 on, fp32 model loading, LR 2e-5, fused AdamW;
  ``warmup_ratio`` is gone in transformers 5: a ratio goes in ``warmup_steps``).
- Data: the TIRGen export (``thor_core.sft_data``); only ``input_ids`` and
  ``labels`` reach the trainer. The prompt is never trained on; the inserted
  ```output blocks are trained on unless ``mask_tool_outputs`` (the authors
  train on them). Their labels are rebuilt from ``tool_output_mask`` here, so
  the option works whichever way the dataset was saved. Examples longer than
  ``max_length`` are cut at the end (TRL's ``keep_start``) and counted.
- Full fine-tuning, or LoRA (peft): the adapter goes to ``<out>/adapter`` and
  a merged plain model to ``<out>/final`` (``sft_run.merge_lora``); full
  fine-tuning saves ``<out>/final`` directly. HF format with the tokenizer and
  chat template, published atomically.
- Resuming (rules in ``thor_core.sft_run``): checkpoints every ``save_steps``;
  a killed run restarts from its last complete checkpoint (model, optimizer,
  scheduler, RNG, data position: the trainer skips the batches already seen);
  a finished run returns at once unless ``overwrite``; other settings are refused.
- Logs: ``<out>/loss.jsonl``, plain progress lines with an ETA when headless
  (papermill, pipes; ``thor_core.progress`` decides), the Trainer's bars on a
  terminal or in JupyterLab, ``<out>/sft_summary.json``.
- Several processes: ``accelerate launch --config_file params/accelerate/X.yaml
  -m thor_core.sft --config ...`` runs this module on every rank; the global
  batch is fixed (``global_batch_size``) and gradient accumulation derived from
  the number of processes, so 1 and N processes take the same steps. On a
  machine without GPUs the ranks train on the CPU over gloo.

Not covered: packing is off by default (with one example per device and step,
the CPU profiles pad nothing; padding-free rows are checked correct here for
CPU SDPA only, tests/test_sft.py), evaluation during training, hub uploads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from thor_core import progress, sft_run
from thor_core.models import DEFAULT_MODEL
from thor_core.params import validate_params
from thor_core.provenance import bf16_autocast
from thor_core.runs import repo_path, write_json_atomic

IGNORE = -100


def _f(default: Any, help: str, **kw: Any) -> Any:
    if callable(default):
        return field(default_factory=default, metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class SFTParams:
    """Settings of one SFT run (paper defaults; params/*/02_sft.yaml set the profiles)."""

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
    learning_rate: float = _f(2.0e-6, "peak learning rate (paper: 2e-6)")
    lr_scheduler_type: Literal["constant_with_warmup", "constant", "linear", "cosine"] = _f(
        "constant_with_warmup", "learning-rate schedule (paper: constant)"
    )
    warmup_ratio: float = _f(0.05, "share of the steps spent warming up (paper: 0.05)")
    num_train_epochs: float = _f(1.0, "epochs over the dataset (paper: 1; the authors' script: 3)")
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: run the epochs)")
    global_batch_size: int = _f(128, "examples per optimizer step over all processes (paper: 128-256)")
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
        if problems:
            raise ValueError("SFTParams: " + "; ".join(problems))

    def dataset_path(self) -> Path:
        return repo_path(self.dataset) if self.dataset else repo_path(self.tirgen_dir) / "sft"


def load_params(config: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> SFTParams:
    """``SFTParams`` from a flat YAML file (optional) with ``overrides`` on top, validated.

    The file may be a notebook-02 profile: its keys for the before/after check
    (``thor_core.sft_eval.NotebookParams``) are skipped; any other unknown key is an error.
    """
    import yaml

    from thor_core.sft_eval import NotebookParams

    values: dict[str, Any] = {}
    if config is not None:
        values = yaml.safe_load(Path(config).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{config}: expected a mapping of parameter names to values")
        check_only = {f.name for f in dataclasses.fields(NotebookParams)} - {
            f.name for f in dataclasses.fields(SFTParams)
        }
        values = {k: v for k, v in values.items() if k not in check_only}
    values.update(overrides or {})
    return validate_params(SFTParams, values, source=str(config) if config else None)


# ------------------------------------------------------------------ data


def example_labels(example: dict[str, Any], mask_tool_outputs: bool) -> list[int]:
    """Labels of one TIRGen example: the prompt stays -100, output-block tokens follow ``mask_tool_outputs``."""
    labels, ids = list(example["labels"]), example["input_ids"]
    for i, (tid, tool) in enumerate(zip(ids, example.get("tool_output_mask") or [0] * len(ids), strict=True)):
        if tool:
            labels[i] = IGNORE if mask_tool_outputs else tid
    return labels


def prepare_dataset(dataset, mask_tool_outputs: bool = False, limit: int | None = None):
    """The trainer's dataset: ``input_ids`` and ``labels`` only (first ``limit`` rows when given)."""
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    # In memory: no cache files written into the TIRGen folder (several ranks may read it at once).
    dataset = dataset.map(lambda ex: {"labels": example_labels(ex, mask_tool_outputs)}, keep_in_memory=True)
    return dataset.select_columns(["input_ids", "labels"])


# ------------------------------------------------------------ TRL config


def sft_config(p: SFTParams, n_processes: int | None = None):
    """The ``trl.SFTConfig`` of ``p`` (the only place our names meet TRL's); ``n_processes``
    defaults to ``$WORLD_SIZE`` (set by accelerate/torchrun), else 1."""
    import torch
    from trl import SFTConfig

    n = n_processes or int(os.environ.get("WORLD_SIZE", "1"))
    per_step = p.per_device_batch_size * n
    if p.global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size {p.global_batch_size} is not a multiple of per_device_batch_size x processes = {per_step}"
        )
    return SFTConfig(
        output_dir=str(repo_path(p.output_dir)),
        model_init_kwargs={"dtype": p.model_dtype, "attn_implementation": p.attn_implementation, "device_map": None},
        learning_rate=p.learning_rate,
        lr_scheduler_type=p.lr_scheduler_type,
        warmup_steps=p.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        num_train_epochs=p.num_train_epochs,
        max_steps=p.max_steps,
        per_device_train_batch_size=p.per_device_batch_size,
        gradient_accumulation_steps=p.global_batch_size // per_step,
        max_length=p.max_length,
        packing=p.packing,
        bf16=bf16_autocast(p.bf16, "cuda" if torch.cuda.is_available() else "cpu"),  # fp32 where it would be emulated
        fp16=False,
        # without a GPU transformers refuses bf16 (CPU autocast) unless told it runs on the CPU; the RL trainer's rule
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=p.gradient_checkpointing,
        optim=p.optim,
        weight_decay=p.weight_decay,
        max_grad_norm=p.max_grad_norm,
        seed=p.seed,
        data_seed=p.seed,
        logging_steps=p.logging_steps,
        save_strategy="steps",
        save_steps=p.save_steps,
        save_total_limit=p.save_total_limit,
        report_to=[],
        disable_tqdm=p.progress == "lines" or (p.progress == "auto" and progress.mode() == "lines"),
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
    )


def lora_config(p: SFTParams):
    """``peft.LoraConfig`` for ``method == "lora"``, else None."""
    if p.method != "lora":
        return None
    from peft import LoraConfig

    targets = "all-linear" if p.lora_target_modules == ["all-linear"] else list(p.lora_target_modules)
    return LoraConfig(
        r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout, target_modules=targets, task_type="CAUSAL_LM"
    )


# -------------------------------------------------------------- training


def _release_memory() -> None:
    """Free the training model before what comes next (the notebook's evaluation) loads another."""
    import ctypes
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:  # glibc keeps freed arenas; hand them back to the system
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def train(p: SFTParams) -> dict[str, Any]:
    """Run (or resume, or skip when finished) one SFT run; return its summary (also in ``<out>/sft_summary.json``)."""
    import shutil

    import torch
    from accelerate import PartialState
    from transformers import AutoTokenizer, PrinterCallback

    from thor_core.models import resolve_model
    from thor_core.sft_data import check_tokenizer, load_sft_dataset

    if os.environ.get("LOCAL_RANK") is not None and not torch.cuda.is_available():
        # A rank launched by accelerate/torchrun on a machine without GPUs: accelerate only forms a
        # (gloo) process group on the CPU when told to use it; otherwise every rank trains alone.
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    out = repo_path(p.output_dir)
    cfg = sft_config(p, int(os.environ.get("WORLD_SIZE", "1")))  # builds the distributed state
    if cfg.disable_tqdm:  # plain lines only: no bars from loading, mapping and saving either
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    state = PartialState()
    if state.num_processes != cfg.world_size:
        raise RuntimeError(f"{state.num_processes} processes joined, the config expected {cfg.world_size}")
    if sft_run.is_finished(out) and not p.overwrite:
        sft_run.refuse_other_settings(out, p, "a finished run")
        return sft_run.read_summary(out)
    raw = load_sft_dataset(p.dataset_path())  # fails at once, saying what to run first
    folder = resolve_model(p.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    check_tokenizer(p.dataset_path(), tokenizer, p.model)  # and so does another model's tokenisation
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if p.overwrite:
            sft_run.clear(out)
        sft_run.drop_torn_checkpoints(out)
        if sft_run.complete_checkpoints(out):
            sft_run.refuse_other_settings(out, p, "checkpoints")
        sft_run.record_settings(out, p)
        shutil.rmtree(out / "final.tmp", ignore_errors=True)
    state.wait_for_everyone()
    t0 = time.monotonic()
    data = prepare_dataset(raw, p.mask_tool_outputs, p.limit)
    if len(data) == 0:
        raise ValueError(f"the SFT dataset at {p.dataset_path()} has no examples")
    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=str(folder),
        args=cfg,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(p),
        callbacks=[sft_run.loss_callback(out, cfg.disable_tqdm)],
    )
    trainer.remove_callback(PrinterCallback)  # our callback prints plainer lines
    checkpoints = sft_run.complete_checkpoints(out)
    resumed = checkpoints[-1] if checkpoints else None
    result = trainer.train(resume_from_checkpoint=str(resumed) if resumed else None)
    steps_before = sft_run.checkpoint_step(resumed) if resumed else 0

    trainable = sum(x.numel() for x in trainer.model.parameters() if x.requires_grad)
    trainer.model.config.use_cache = True  # saved for generation, whatever training used
    if p.method == "lora":
        trainer.save_model(str(out / "adapter"))
    else:
        tmp = out / "final.tmp"
        trainer.save_model(str(tmp))
        if state.is_main_process:
            sft_run.publish(tmp, out / "final")
    log = trainer.state.log_history
    global_step = trainer.state.global_step
    del trainer
    _release_memory()
    summary = {}
    if state.is_main_process:
        if p.method == "lora":
            sft_run.merge_lora(str(folder), out / "adapter", out / "final", dtype=p.model_dtype)
        losses = [h["loss"] for h in log if "loss" in h]
        labelled = sum(sum(x != IGNORE for x in row) for row in data["labels"])
        wall = round(time.monotonic() - t0, 2)
        summary = {
            "status": "done",
            "steps": global_step,
            "steps_this_session": global_step - steps_before,
            "resumed_from": str(resumed) if resumed else None,
            "final_loss": losses[-1] if losses else None,
            "first_loss": losses[0] if losses else None,
            "train_loss": result.training_loss,
            "wall_s": wall,
            "dataset": str(p.dataset_path()),
            "dataset_size": len(data),
            "tokens": sum(len(row) for row in data["input_ids"]),
            "trained_tokens": labelled,
            "truncated": sum(len(row) > p.max_length for row in data["input_ids"]),
            "processes": state.num_processes,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "trainable_parameters": trainable,
            "final_dir": str(out / "final"),
            "adapter_dir": str(out / "adapter") if p.method == "lora" else None,
            "params": dataclasses.asdict(p),
        }
        write_json_atomic(out / sft_run.SUMMARY, summary)
    state.wait_for_everyone()
    return summary


# ------------------------------------------------------------------- CLI


def _parse_cli(argv: list[str]) -> tuple[str | None, dict[str, Any], bool]:
    import yaml

    config, overrides, i = None, {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            return None, {}, True
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}: use --config FILE and --name value")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise ValueError(f"--{name} needs a value")
            value, i = argv[i + 1], i + 1
        if name == "config":
            config = value
        else:
            overrides[name.replace("-", "_")] = yaml.safe_load(value) if value.strip() else None
        i += 1
    return config, overrides, False


def usage() -> str:
    rows = [
        f"  --{f.name} ({f.type}, default {f.default if f.default is not dataclasses.MISSING else f.default_factory()!r}): "
        f"{f.metadata['help']}"
        for f in dataclasses.fields(SFTParams)
    ]
    return (
        "usage: python -m thor_core.sft [--config FILE.yaml] [--name value ...]\n"
        "       accelerate launch [--config_file params/accelerate/X.yaml] -m thor_core.sft --config ...\n"
        "Values are read as YAML (3, 1.0e-5, true, [a, b]); --name overrides the file.\n" + "\n".join(rows)
    )


def main(argv: list[str] | None = None) -> int:
    from thor_core.params import ParamsError

    try:
        config, overrides, want_help = _parse_cli(list(sys.argv[1:] if argv is None else argv))
        if want_help:
            print(usage())
            return 0
        params = load_params(config, overrides)
    except (ValueError, ParamsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        summary = train(params)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary:  # the main process's
        print(json.dumps({k: summary.get(k) for k in ("status", "steps", "final_loss", "wall_s", "final_dir")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
