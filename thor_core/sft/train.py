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
- Data: the TIRGen export (``thor_core.data.sft_examples``); only ``input_ids`` and
  ``labels`` reach the trainer. The prompt is never trained on; the inserted
  ```output blocks are trained on unless ``mask_tool_outputs`` (the authors
  train on them). Their labels are rebuilt from ``tool_output_mask`` here, so
  the option works whichever way the dataset was saved. Examples longer than
  ``max_length`` are cut at the end (TRL's ``keep_start``) and counted.
- Full fine-tuning, or LoRA (peft): the adapter goes to ``<out>/adapter`` and
  a merged plain model to ``<out>/final`` (``thor_core.sft.folder.merge_lora``); full
  fine-tuning saves ``<out>/final`` directly. HF format with the tokenizer and
  chat template, published atomically.
- Resuming (rules in ``thor_core.sft.folder``): checkpoints every ``save_steps``;
  a killed run restarts from its last complete checkpoint (model, optimizer,
  scheduler, RNG, data position: the trainer skips the batches already seen);
  a finished run returns at once unless ``overwrite``; other settings are refused.
- Logs: ``<out>/loss.jsonl``, plain progress lines with an ETA when headless
  (papermill, pipes; ``thor_core.progress`` decides), the Trainer's bars on a
  terminal or in JupyterLab, ``<out>/sft_summary.json``; ``report_to`` goes to
  TRL as it is (TensorBoard in ``<out>/tb`` by default; ``thor_core.tracking``).
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
from typing import Any

from thor_core import progress, tracking
from thor_core.data.sft_examples import IGNORE, check_tokenizer, load_sft_dataset
from thor_core.files import repo_path, write_json_atomic
from thor_core.hardware import bf16_autocast
from thor_core.models import resolve_model
from thor_core.params import ParamsError
from thor_core.sft import folder as run_folder
from thor_core.sft.config import SFTParams, load_params

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
        report_to=tracking.names(p.report_to),  # TRL's callbacks log; tracking.run_folder_env places them
        project=tracking.PROJECT,  # trackio's project (wandb's comes from WANDB_PROJECT)
        run_name=repo_path(p.output_dir).name,
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
    if run_folder.is_finished(out) and not p.overwrite:
        run_folder.check_settings(out, p, "a finished run")
        return run_folder.read_summary(out)
    raw = load_sft_dataset(p.dataset_path())  # fails at once, saying what to run first
    folder = resolve_model(p.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    check_tokenizer(p.dataset_path(), tokenizer, p.model)  # and so does another model's tokenisation
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if p.overwrite:
            run_folder.clear(out)
        run_folder.drop_torn_checkpoints(out)
        if not run_folder.complete_checkpoints(out):
            run_folder.forget_settings(out)
        run_folder.check_settings(out, p, "checkpoints")
        shutil.rmtree(out / "final.tmp", ignore_errors=True)
    state.wait_for_everyone()
    t0 = time.monotonic()
    data = prepare_dataset(raw, p.mask_tool_outputs, p.limit)
    if len(data) == 0:
        raise ValueError(f"the SFT dataset at {p.dataset_path()} has no examples")
    from trl import SFTTrainer

    with tracking.run_folder_env(p.report_to, out):  # the trackers write into the run folder
        trainer = SFTTrainer(
            model=str(folder),
            args=cfg,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=lora_config(p),
            callbacks=[run_folder.loss_callback(out, cfg.disable_tqdm)],
        )
        trainer.remove_callback(PrinterCallback)  # our callback prints plainer lines
        checkpoints = run_folder.complete_checkpoints(out)
        resumed = checkpoints[-1] if checkpoints else None
        result = trainer.train(resume_from_checkpoint=str(resumed) if resumed else None)
    steps_before = run_folder.checkpoint_step(resumed) if resumed else 0

    trainable = sum(x.numel() for x in trainer.model.parameters() if x.requires_grad)
    trainer.model.config.use_cache = True  # saved for generation, whatever training used
    if p.method == "lora":
        trainer.save_model(str(out / "adapter"))
    else:
        tmp = out / "final.tmp"
        trainer.save_model(str(tmp))
        if state.is_main_process:
            run_folder.publish(tmp, out / "final")
    log = trainer.state.log_history
    global_step = trainer.state.global_step
    del trainer
    _release_memory()
    summary = {}
    if state.is_main_process:
        if p.method == "lora":
            run_folder.merge_lora(str(folder), out / "adapter", out / "final", dtype=p.model_dtype)
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
        write_json_atomic(out / run_folder.SUMMARY, summary)
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
