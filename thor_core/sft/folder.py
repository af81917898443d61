"""The folder of one SFT run (``thor_core.sft.train``): what is in it, and the rules for resuming it.

Layout of ``<out>/``: ``checkpoint-N/`` (the trainer's: model or adapter,
optimizer, scheduler, RNG and trainer state; ``trainer_state.json`` is written
last, so a folder without it is torn), ``final/`` (the model to use, HF
format with tokenizer and chat template), ``adapter/`` (LoRA only),
``loss.jsonl`` (one line per logged step), ``sft_params.json`` (the settings
the run was started with) and ``sft_summary.json`` (written once, when done).

Covered: finding the complete checkpoints and removing torn ones; telling a
finished run; refusing to resume or reuse a run under other settings (those
in ``RESUME_FREE`` may change); the loss log, kept free of steps that a kill
undid; a trainer callback writing it with plain progress lines and an ETA;
atomic publishing of ``final/``; merging a LoRA adapter into its base.

Not covered: runs on several machines sharing no file system (every process
reads the same ``<out>``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from thor_core import files, tracking
from thor_core.files import read_jsonl_rows
from thor_core.models import load_model_and_tokenizer

SUMMARY = "sft_summary.json"
LOSS_LOG = "loss.jsonl"
PARAMS_FILE = "sft_params.json"
#: Settings that may differ between a killed run and its resumption.
RESUME_FREE = ("overwrite", "progress", "save_steps", "save_total_limit", "output_dir", "report_to")
REMEDY = "pass overwrite=True to start over, or use another output_dir"
LOG_KEYS = ("step", "loss", "grad_norm", "learning_rate", "epoch", "mean_token_accuracy", "num_tokens")


def checkpoint_step(folder: Path) -> int:
    return int(folder.name.rsplit("-", 1)[1])


def complete_checkpoints(out: str | os.PathLike) -> list[Path]:
    """``checkpoint-N`` folders holding ``trainer_state.json``, oldest first."""
    found = [c for c in Path(out).glob("checkpoint-*") if c.name.rsplit("-", 1)[1].isdigit()]
    return sorted((c for c in found if (c / "trainer_state.json").is_file()), key=checkpoint_step)


def drop_torn_checkpoints(out: str | os.PathLike) -> None:
    keep = set(complete_checkpoints(out))
    for c in Path(out).glob("checkpoint-*"):
        if c.is_dir() and c not in keep:
            shutil.rmtree(c, ignore_errors=True)


def clear(out: str | os.PathLike) -> None:
    """Delete what a run wrote (checkpoints, final/, adapter/, logs and trackers, settings, summary); other files stay."""
    out = Path(out)
    names = [c.name for c in out.glob("checkpoint-*")] + ["final", "final.tmp", "adapter", SUMMARY, LOSS_LOG]
    names += tracking.FOLDERS
    for target in [out / n for n in names] + [out / PARAMS_FILE]:
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)


def read_summary(out: str | os.PathLike) -> dict[str, Any] | None:
    try:
        return json.loads((Path(out) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def is_finished(out: str | os.PathLike) -> bool:
    """The summary says done and ``final/`` holds a model."""
    s = read_summary(out)
    return bool(s and s.get("status") == "done" and (Path(out) / "final" / "config.json").is_file())


def read_loss(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of ``<out>/loss.jsonl`` (empty when there is none yet; a line being written is skipped)."""
    return read_jsonl_rows(Path(out) / LOSS_LOG)


def check_settings(out: str | os.PathLike, params, what: str) -> None:
    """Record ``params`` (``RESUME_FREE`` aside) in the run folder, or refuse those ``what`` was made with differ."""
    settings = {k: v for k, v in dataclasses.asdict(params).items() if k not in RESUME_FREE}
    files.check_settings(Path(out) / PARAMS_FILE, settings, what, REMEDY)


def forget_settings(out: str | os.PathLike) -> None:
    """Nothing to resume (no complete checkpoint): the next start's settings hold."""
    (Path(out) / PARAMS_FILE).unlink(missing_ok=True)


def loss_callback(out: str | os.PathLike, print_lines: bool):
    """A ``TrainerCallback`` writing ``loss.jsonl`` on the main process, and progress lines where asked."""
    from transformers import TrainerCallback

    out = Path(out)

    class LossLog(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.step0, self.session = time.monotonic(), state.global_step, os.getpid()
            if state.is_world_process_zero:  # keep the steps the restored state has, drop those a kill undid
                rows = {h["step"]: _row(h, None) for h in state.log_history if "loss" in h}
                rows.update({r["step"]: r for r in read_loss(out) if r["step"] in rows})  # with their sessions
                (out / LOSS_LOG).write_text("".join(json.dumps(rows[k]) + "\n" for k in sorted(rows)))

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            elapsed = time.monotonic() - self.t0
            done = state.global_step - self.step0
            row = {**_row({**logs, "step": state.global_step}, self.session), "elapsed_s": round(elapsed, 2)}
            with open(out / LOSS_LOG, "a") as f:
                f.write(json.dumps(row) + "\n")
            if print_lines:
                eta = f"{elapsed / done * (state.max_steps - state.global_step):.0f} s" if done else "?"
                print(
                    f"step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}  "
                    f"lr {logs.get('learning_rate', 0):.2e}  elapsed {elapsed:.0f} s  eta {eta}",
                    flush=True,
                )

    return LossLog()


def _row(h: dict[str, Any], session: int | None) -> dict[str, Any]:
    return {**{k: h[k] for k in LOG_KEYS if k in h}, "session": session}


def publish(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move a finished folder into place (readers never see half a model)."""
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return Path(final)


def merge_lora(
    base_model: str, adapter_dir: str | os.PathLike, dest: str | os.PathLike, dtype: str = "float32"
) -> Path:
    """A fresh base + the adapter, ``merge_and_unload``, saved as a plain model with the tokenizer.

    Merging into a fresh copy (not the trained model) works whatever sharding
    trained it, and keeps the training model's memory out of it.
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    base, tokenizer = load_model_and_tokenizer(base_model, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tmp = Path(f"{dest}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    if (Path(adapter_dir) / "tokenizer_config.json").exists():  # the trainer's copy (its pad token set)
        tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(tmp)
    return publish(tmp, dest)
