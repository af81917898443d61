"""TIRGen's settings: ``TIRGenParams`` (every setting of a run, with help text) and ``TIRGenNotebook`` (notebook 01's
own keys); ``load_params`` reads a notebook-01 profile for the CLI.

Which tool outputs SFT trains on is SFT's setting (``SFTParams.mask_tool_outputs``): the export keeps every label and
marks the output blocks (``thor_core.data.sft_examples``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from thor_core.backends.base import SamplingParams
from thor_core.data.benchmarks import setting_problems
from thor_core.models import DEFAULT_MODEL
from thor_core.params import read_yaml_mapping, split_params
from thor_core.sandbox import check_urls
from thor_core.tirgen import actor_critic, filters

BackendName = Literal["auto", "hf", "vllm", "openai"]  # a make_backend kind (backends.base.Backend is the class)


@dataclass
class TIRGenParams:
    """Every setting of a TIRGen run (``python -m thor_core.tirgen``, notebook 01); see params/*/01_tirgen.yaml."""

    actor_model: str = field(default=DEFAULT_MODEL, metadata={"help": "the policy that writes every step"})
    actor_backend: BackendName = field(default="auto", metadata={"help": "auto: vllm where installed, else hf"})
    critic_model: str | None = field(default=None, metadata={"help": "null: the actor's model (one shared backend)"})
    critic_backend: BackendName = field(default="auto", metadata={"help": "openai: a `vllm serve` of a larger model"})
    critic_base_url: str | None = field(default=None, metadata={"help": "for critic_backend openai"})
    problems: str = field(
        default="generated",
        metadata={"help": "'generated', a benchmark, a file, or a mix 'dapo17k+deepmath*2' (data.benchmarks)"},
    )
    n_problems: int = field(default=200, metadata={"help": "problems to draw (all shards together)"})
    problem_seed: int = field(default=1000, metadata={"help": "seed of the generated problems and of a mix's draw"})
    levels: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "difficulty levels 1-3"})
    kinds: list[str] | None = field(default=None, metadata={"help": "problem kinds (null: all)"})
    k: int = field(default=4, metadata={"help": "attempts per question (authors: 8)"})
    step_tokens: int = field(default=512, metadata={"help": "L_step: 512 non-reasoning, 4096 reasoning models"})
    step_stop: list[str] = field(default_factory=lambda: ["\n\n"], metadata={"help": "a step also ends here"})
    max_new_tokens: int = field(default=1536, metadata={"help": "completion cap, tool outputs included"})
    max_steps: int = field(default=24, metadata={"help": "actor steps per attempt"})
    max_tool_rounds: int = field(default=5, metadata={"help": "code rounds per step (actor or critic)"})
    long_cot: bool = field(default=False, metadata={"help": "critic only inside <think>...</think>"})
    critic_min_step_tokens: int = field(default=1, metadata={"help": "shorter steps skip the critic"})
    critic_max_new_tokens: int = field(default=768, metadata={"help": "budget of one critic rewrite"})
    critic_retries: int = field(default=0, metadata={"help": "0: a failed critic call drops the attempt"})
    actor_temperature: float = field(default=0.7, metadata={"help": "actor sampling temperature"})
    critic_temperature: float = field(default=0.2, metadata={"help": "critic sampling temperature"})
    actor_prompt: Literal["cot", "tir"] = field(default="cot", metadata={"help": "prompt the actor writes under"})
    code_timeout_s: float | None = field(default=None, metadata={"help": "per call (null: sandbox default)"})
    sandbox_urls: list[str] | None = field(
        default=None,
        metadata={
            "help": "sandbox hosts: http://HOST:PORT each, running thor_core.sandbox.server (null: this machine)"
        },
    )
    nontrivial_code: Literal["paper", "authors", "off"] = field(default="paper", metadata={"help": "code rule"})
    one_call_keep: float = field(default=0.5, metadata={"help": "share of 1-call samples kept (1.0: all)"})
    cot_filter_k: int = field(default=0, metadata={"help": "CoT samples per question for the pre-filter (0: off)"})
    cot_solved_at: float = field(default=1.0, metadata={"help": "drop a question when CoT accuracy >= this"})
    cot_max_new_tokens: int = field(default=1024, metadata={"help": "CoT pre-filter budget"})
    max_in_flight: int = field(default=32, metadata={"help": "attempts generating at once"})
    shard: str = field(default="0/1", metadata={"help": "'i/n': this process takes problems i, i+n, ..."})
    seed: int = field(default=0, metadata={"help": "sampling and selection seed"})

    def __post_init__(self) -> None:
        problems = []
        for name in ("n_problems", "k", "max_in_flight"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.cot_solved_at <= 1.0:
            problems.append(f"cot_solved_at must be in [0, 1], got {self.cot_solved_at}")
        try:
            self.shard_index()
        except ValueError as e:
            problems.append(str(e))
        try:
            check_urls(self.sandbox_urls)
        except ValueError as e:
            problems.append(str(e))
        problems += setting_problems(self.problems)
        if self.critic_backend == "openai" and not self.critic_base_url:
            problems.append("critic_backend 'openai' needs critic_base_url (e.g. http://host:8000/v1)")
        if problems:
            raise ValueError("TIRGenParams: " + "; ".join(problems))
        self.tirgen_config()  # its own checks
        self.filter_config()

    def shard_index(self) -> tuple[int, int]:
        try:
            i, n = (int(x) for x in self.shard.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like 'i/n' (e.g. '0/4'), got {self.shard!r}") from None
        if not 0 <= i < n:
            raise ValueError(f"shard {self.shard!r}: need 0 <= i < n")
        return i, n

    def tirgen_config(self) -> actor_critic.TIRGenConfig:
        return actor_critic.TIRGenConfig(
            step_tokens=self.step_tokens,
            step_stop=tuple(self.step_stop),
            max_new_tokens=self.max_new_tokens,
            max_steps=self.max_steps,
            max_tool_rounds=self.max_tool_rounds,
            long_cot=self.long_cot,
            critic_min_step_tokens=self.critic_min_step_tokens,
            critic_max_new_tokens=self.critic_max_new_tokens,
            critic_retries=self.critic_retries,
            actor_sampling=SamplingParams(temperature=self.actor_temperature),
            critic_sampling=SamplingParams(temperature=self.critic_temperature),
            actor_prompt=self.actor_prompt,
            code_timeout_s=self.code_timeout_s,
        )

    def filter_config(self) -> filters.FilterConfig:
        return filters.FilterConfig(nontrivial=self.nontrivial_code, one_call_keep=self.one_call_keep, seed=self.seed)

    def generation_config(self) -> dict[str, Any]:
        """What decides the attempts (resuming with another is refused); filters and export are not in it."""
        # n_problems is left out on purpose: problem i is the same whatever n is (generate_problems draws in
        # order; benchmarks keep their order), so a run can grow or shrink and keeps every attempt it made.
        keys = ("actor_model", "critic_model", "problems", "problem_seed", "levels", "kinds", "k")
        return {
            **{key: getattr(self, key) for key in keys},
            "shard": self.shard,
            "seed": self.seed,
            "loop": dataclasses.asdict(self.tirgen_config()),
        }


@dataclass
class TIRGenNotebook:
    """Notebook 01's own keys (params/*/01_tirgen.yaml), beside ``TIRGenParams``."""

    show_trajectories: int = field(default=3, metadata={"help": "records rendered in the notebook"})
    run_dir: str | None = field(default=None, metadata={"help": "output folder (run_notebook sets it)"})


def load_params(config: str | os.PathLike) -> TIRGenParams:
    """``TIRGenParams`` from a notebook-01 profile (its display keys are read and set aside), validated."""
    return split_params((TIRGenParams, TIRGenNotebook), read_yaml_mapping(Path(config)), str(config))[0]
