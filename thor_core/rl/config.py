"""Settings of one hierarchical-RL run (THOR stage 3), with help text; params/*/03_rl.yaml set the profiles.

Defaults are the paper's and the authors' settings (docs/METHOD.md) where
they make sense on any machine; the profiles shrink the sizes. Loaded and
checked like every stage's settings (``thor_core.params.validate_params``:
an unknown name or a bad value is named with the allowed ones).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from thor_core.data.benchmarks import setting_problems
from thor_core.evaluation.before_after import CheckParams
from thor_core.files import repo_path
from thor_core.params import help_field, read_yaml_mapping, split_params
from thor_core.record import MISMATCH_THRESHOLD
from thor_core.sandbox import check_urls
from thor_core.tracking import HELP as REPORT_TO_HELP
from thor_core.tracking import ReportTo
from thor_core.tracking import problems as report_to_problems

MODES = ("cot", "episode", "thor")


@dataclass
class RLParams:
    """Every setting of ``thor_core.rl.trainer.train``."""

    # -- what to train, on what
    model: str = help_field(
        "outputs/cpu/02_sft/final", "start checkpoint: SFT's final/ (default), embedded:..., a folder or hub id"
    )
    mode: Literal["cot", "episode", "thor"] = help_field(
        "thor",
        "cot: RL without tools (T2); episode: episode-level GRPO with tools (T4); thor: episode + step level (T5)",
    )
    output_dir: str | None = help_field(
        None, "run folder: metrics.jsonl, checkpoints/, final/, samples/ (null: outputs/adhoc/03_rl)"
    )
    problems: str = help_field(
        "generated",
        "'generated' (procedural, offline), a benchmark, a file, or a mix 'a+b*2' (thor_core.data.benchmarks); "
        "decontaminated against the evaluation sets (thor_core.data.heldout)",
    )
    n_problems: int = help_field(
        512, "training questions (the data loops over them in a seeded order, epoch after epoch)"
    )
    problem_seed: int = help_field(
        2027, "seed of the generated problems or a mix's draw (not TIRGen's, not held-out sets')"
    )
    levels: list[int] = help_field(lambda: [1, 2, 3], "difficulty levels of generated problems")
    steps: int = help_field(100, "optimizer steps (one rollout batch each)")
    questions_per_step: int = help_field(
        32, "episode-level groups wanted per step, over all processes (dynamic filtering refills)"
    )
    group_size: int = help_field(16, "G: rollouts per question, and continuations per step-level prefix (paper: 16)")
    max_refill_rounds: int = help_field(2, "extra sampling rounds per step when filtered groups leave the batch short")
    # -- rollouts
    backend: Literal["auto", "hf", "vllm"] = help_field(
        "auto", "rollout engine backend: auto = vLLM where installed, else hf"
    )
    temperature: float = help_field(1.0, "sampling temperature of the rollouts (the trainer's log-probs use the same)")
    top_p: float = help_field(1.0, "nucleus sampling of the rollouts")
    max_prompt_tokens: int = help_field(800, "questions whose prompt is longer are skipped (authors: 800)")
    max_new_tokens: int = help_field(
        3200, "completion budget of an episode rollout, tool outputs included (authors: 3200)"
    )
    max_tool_rounds: int = help_field(5, "code calls per rollout (authors: 5)")
    stop_at_failed_call: bool = help_field(
        True, "the authors' training shortcut: a rollout ends at its first failed call"
    )
    code_timeout_s: float | None = help_field(None, "per code call (null: the sandbox default)")
    sandbox_urls: list[str] | None = help_field(
        None, "sandbox hosts: http://HOST:PORT each, running thor_core.sandbox.server (null: this machine)"
    )
    infra_failure_limit: float = help_field(
        0.5,
        "stop when the sandbox's own timeouts exceed this share of a step's calls (timed-out calls re-run alone to tell)",
    )
    # -- episode level
    exclude_failed_code: bool = help_field(True, "leave rollouts whose code failed out of the episode loss (paper)")
    min_response_tokens: int = help_field(0, "drop rollouts with fewer sampled tokens (authors: 150; 0 = off)")
    boxed_within_last: int = help_field(
        0, "drop rollouts without \\boxed{} in their last N tokens (authors: 100; 0 = off)"
    )
    min_group_survival: float = help_field(
        0.5, "drop a group when fewer than this share of its rollouts pass the filters"
    )
    # -- step level
    suffix_tokens: int = help_field(
        100, "L_suf: tokens before a failed ```python block that the step level regenerates"
    )
    step_prefixes: Literal["per_rollout", "every_call"] = help_field(
        "per_rollout", "which failed calls become prefixes: the first per rollout (authors' code) or every one (paper)"
    )
    max_step_prefixes: int | None = help_field(
        None, "cap on step-level prefixes per step (null: the number of questions, authors)"
    )
    step_fallback: bool = help_field(True, "no failed call in the batch: use one random rollout's first call (authors)")
    step_max_new_tokens: int = help_field(512, "budget of a step-level continuation (suffix + one code block)")
    # -- objective (thor_core.rl.losses)
    eps_low: float = help_field(0.2, "clip 1 - eps_low")
    eps_high: float = help_field(0.28, "clip 1 + eps_high (clip-higher)")
    dual_clip: float | None = help_field(3.0, "dual-clip c for negative advantages (authors: 3; null: off)")
    aggregation: Literal["token_mean", "seq_mean"] = help_field(
        "token_mean", "token mean over the batch (authors) or per sequence"
    )
    combine: Literal["joint", "separate"] = help_field(
        "joint", "joint: one token-mean over episode + step rows (authors' code); separate: L_episode + L_step (paper)"
    )
    nll_alpha: float = help_field(0.01, "alpha of the NLL term on positive-advantage rows (both levels)")
    kl_beta: float = help_field(
        0.0, "KL-to-reference coefficient (paper: 0; > 0 keeps a frozen copy of the start model)"
    )
    tis_cap: float | None = help_field(None, "truncated importance sampling on engine vs trainer log-probs (null: off)")
    mismatch_threshold: float = help_field(
        MISMATCH_THRESHOLD,
        "|engine - trainer| log-prob (nats) past which a token counts as mismatched (metric, viewer)",
    )
    adv_eps: float = help_field(1e-6, "eps in (r - mean) / (std + eps)")
    # -- optimisation
    updates_per_batch: int = help_field(
        1, "1: on-policy (TRL's default); > 1: the authors' several updates per rollout batch"
    )
    micro_batch_rows: int = help_field(4, "rows per forward/backward pass (gradient accumulation makes up the batch)")
    learning_rate: float = help_field(1e-6, "AdamW learning rate (authors: 1e-6)")
    weight_decay: float = help_field(0.0, "AdamW weight decay")
    warmup_steps: int = help_field(0, "linear warm-up steps, then constant")
    max_grad_norm: float = help_field(1.0, "gradient clipping norm (0: off)")
    method: Literal["full", "lora"] = help_field(
        "full", "full fine-tune or LoRA (merged for each weight push and at the end)"
    )
    lora_r: int = help_field(16, "LoRA rank")
    lora_alpha: int = help_field(32, "LoRA alpha")
    gradient_checkpointing: bool = help_field(False, "recompute activations in the backward pass")
    bf16: bool = help_field(
        False, "bf16 autocast for the trainer's forward passes (log-softmax in fp32); weights stay fp32"
    )
    seed: int = help_field(0, "seed of the rollouts, and of the data order unless data_seed is set")
    data_seed: int | None = help_field(None, "seed of the questions' order alone (null: seed); fixed, runs of several seeds "
                               "see the same questions in the same order (the thor vs episode study)")  # fmt: skip
    # -- run
    save_steps: int = help_field(1, "steps between checkpoints (resume points)")
    save_total_limit: int = help_field(2, "checkpoints kept")
    samples_every: int = help_field(1, "steps between two saved rollout batches (samples/step-N.jsonl); 0: never")
    report_to: ReportTo | list[ReportTo] = help_field("tensorboard", REPORT_TO_HELP)
    overwrite: bool = help_field(False, "redo a finished or started run from scratch")
    progress: Literal["auto", "bar", "lines"] = help_field(
        "auto", "tqdm bar, plain lines, or auto (thor_core.progress decides)"
    )

    def __post_init__(self) -> None:
        problems = []
        for name in ("steps", "questions_per_step", "group_size", "max_new_tokens", "suffix_tokens",
                     "step_max_new_tokens", "micro_batch_rows", "updates_per_batch", "save_steps", "n_problems",
                     "save_total_limit", "max_prompt_tokens"):  # fmt: skip
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            problems.append(f"group_size must be >= 2 (a group of one has no advantage), got {self.group_size}")
        if not 0 <= self.min_group_survival <= 1:
            problems.append(f"min_group_survival must be in [0, 1], got {self.min_group_survival}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            problems.append(f"dual_clip must be > 1 or null, got {self.dual_clip}")
        if self.tis_cap is not None and self.tis_cap <= 0:
            problems.append(f"tis_cap must be > 0 or null, got {self.tis_cap}")
        if self.mismatch_threshold <= 0:
            problems.append(f"mismatch_threshold must be > 0 nats, got {self.mismatch_threshold}")
        if self.temperature <= 0:
            problems.append(f"temperature must be > 0 for RL (greedy groups have no spread), got {self.temperature}")
        try:
            check_urls(self.sandbox_urls)
        except ValueError as e:
            problems.append(str(e))
        problems += setting_problems(self.problems)
        problems += report_to_problems(self.report_to)
        if problems:
            raise ValueError("RLParams: " + "; ".join(problems))

    @property
    def tools(self) -> bool:
        return self.mode != "cot"

    def out(self) -> Path:
        return repo_path(self.output_dir or "outputs/adhoc/03_rl")


@dataclass
class RLNotebook:
    """Notebook 03's own keys (params/*/03_rl.yaml), beside ``RLParams`` and the check's ``CheckParams``."""

    fallback_model: str = help_field("embedded:qwen2.5-coder-0.5b-instruct", "start model when `model` is missing")
    step_check_n: int = help_field(4, "held-out step-level check: failed calls of the start model's answers (0: skip)")
    step_check_k: int = help_field(2, "continuations per prefix in the step-level check")
    show_trajectories: int = help_field(2, "rollouts shown before and after")
    run_dir: str | None = help_field(None, "run folder (run_notebook sets it)")


#: what notebook 03's parameters compose (``params.split_params``)
NOTEBOOK_SCHEMAS = (RLParams, CheckParams, RLNotebook)


def load_params(config: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> RLParams:
    """``RLParams`` from a flat YAML file (a notebook-03 profile: its check and display keys are read and set aside)
    with ``overrides`` on top, validated; any key none of ``NOTEBOOK_SCHEMAS`` declares is an error."""
    values = read_yaml_mapping(Path(config)) if config is not None else {}
    values.update(overrides or {})
    return split_params(NOTEBOOK_SCHEMAS, values, str(config) if config else None)[0]
