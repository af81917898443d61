"""An LLM judge of answer equivalence beside math-verify, re-grading finished evaluation runs; and its CLI.

The paper (arXiv 2509.13761) checks answer equivalence with an LLM judge (Qwen3-32B). The kit grades with
math-verify (``thor_core/grading.py``), which stays the default: it is the RL reward and what every summary counts.
This module adds the paper's kind of judge as an option, **after the fact**: it reads the graded records an
evaluation wrote (``records-<tag>.jsonl``, ``thor_core/evaluation/runner.py``; notebook 04 writes one folder per
rung), asks a model behind any OpenAI-compatible server (``thor_core/backends/openai.py``; e.g. ``vllm serve
Qwen/Qwen3-32B`` on another machine) whether each extracted answer equals the reference, and writes
``judge-<tag>.json`` beside each records file. Nothing is generated again, so a judge can be added to any finished
run, and the run's own files are left as they were.

**The prompt is ours**: the authors did not release their judge prompt. ``JUDGE_SYSTEM_PROMPT`` and
``judge_messages`` are what the judge sees (the problem, the reference answer, the extracted answer; never the
solution), and ``judge-<tag>.json`` records the prompt's SHA-256 so that verdicts under another wording are not
mixed up with these.

Covered:

- ``parse_verdict``: strict. The reply's last non-empty line (after a ``</think>`` block, if any; ``*`` and
  backticks dropped) must be ``VERDICT: EQUIVALENT`` or ``VERDICT: NOT EQUIVALENT`` (case and a final period
  aside). Anything else is ``unparsed``: counted as such, never as right or wrong.
- ``judge_answers``: every distinct (problem, reference, answer) once (k samples often repeat an answer), at most
  ``JudgeSettings.concurrency`` requests in flight; greedy by default.
- ``agreement``: per answer, math-verify's verdict against the judge's. Answers the judge could not decide
  (``unparsed``) and records with no extracted answer (``no_answer``: no ``\\boxed{}``, not sent; math-verify
  counts them wrong) are counted but left out of the comparison. On the rest: the 2x2 table, the agreement rate
  with its Wilson interval (``stats.wilson_interval``), Cohen's kappa (``cohen_kappa``), and every disagreeing pair.
- ``judge_records`` / ``judge_run``: the files; ``judge_markdown``: the table and the disagreements;
  ``python -m thor_core.evaluation judge RUN_DIR --base-url URL --model NAME`` (``main``).

Not covered: resuming a killed judge run (it starts over; it only reads the records), judging whole solutions or
answers outside ``\\boxed{}``, the judge as a reward or in the evaluation summaries (its verdicts live in
``judge-<tag>.json`` only), OpenAI's chat endpoint (the chat template is applied here, with the judge's tokenizer),
and clustering: the k samples of one problem count as independent pairs, so with k > 1 the interval is too narrow.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from thor_core.backends.base import Backend, SamplingParams, SegmentRequest
from thor_core.engine.rollout import run_coroutine
from thor_core.files import iter_json_lines, write_json_atomic
from thor_core.models import EMBEDDED_PREFIX, ModelNotAvailable, resolve_model
from thor_core.progress import bar as progress_bar
from thor_core.stats import pct, wilson_interval

EQUIVALENT = "equivalent"
NOT_EQUIVALENT = "not_equivalent"
UNPARSED = "unparsed"  # the judge answered, but not with a verdict line: neither right nor wrong
NO_ANSWER = "no_answer"  # the record has no extracted answer: not sent to the judge
VERDICTS = (EQUIVALENT, NOT_EQUIVALENT, UNPARSED, NO_ANSWER)

JUDGE_SYSTEM_PROMPT = (
    "You check answers to math problems. You are given a problem, its reference answer, which is correct, and a "
    "candidate's final answer. Decide whether the candidate's answer is mathematically equivalent to the reference "
    "answer. Do not solve the problem again and do not judge the reasoning: compare the two final answers only.\n"
    "Rules:\n"
    "- Equivalent: the same number, expression, set, interval, tuple or choice, written in any form (a fraction "
    "or an exact decimal, simplified or not, another order of the elements of a set, an equivalent interval "
    "notation, with or without units, a degree sign, 'x =' or a percent sign where the value is the same).\n"
    "- An approximate decimal is not equivalent to an exact value, unless the problem asks for a rounded or "
    "approximate answer and the candidate's is rounded as asked.\n"
    "- For a multiple-choice problem, the option's letter and the option's content are equivalent.\n"
    "- If the candidate gives several different answers, or its answer is incomplete, it is not equivalent.\n"
    "Explain in at most three short sentences, then end your reply with exactly one line, either\n"
    "VERDICT: EQUIVALENT\n"
    "or\n"
    "VERDICT: NOT EQUIVALENT"
)
JUDGE_USER_TEMPLATE = "Problem:\n{question}\n\nReference answer: {reference}\n\nCandidate answer: {answer}"
PROMPT_SHA256 = hashlib.sha256(f"{JUDGE_SYSTEM_PROMPT}\n{JUDGE_USER_TEMPLATE}".encode()).hexdigest()

# the judge's tokenizer, without its weights (those stay on the server)
TOKENIZER_FILES = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


@dataclass
class JudgeSettings:
    """Where the judge is served and how it is asked (recorded in ``judge-<tag>.json``)."""

    base_url: str = field(metadata={"help": "the OpenAI-compatible server, e.g. http://host:8000/v1"})
    model: str | None = field(
        default=None, metadata={"help": "the served model name (None: the server's first); also the tokenizer's"}
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "a local folder, embedded name or hub id of the judge's tokenizer (None: model)"},
    )
    max_new_tokens: int = field(default=512, metadata={"help": "the judge's reply budget (thinking needs thousands)"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy"})
    thinking: bool = field(default=False, metadata={"help": "the chat template's enable_thinking (Qwen3)"})
    concurrency: int = field(default=16, metadata={"help": "requests in flight at once"})
    vllm_extensions: bool = field(
        default=True, metadata={"help": "the server is vLLM (False: a plain OpenAI server, text prompts)"}
    )
    api_key: str | None = field(default=None, metadata={"help": "None: $OPENAI_API_KEY or EMPTY"})

    def __post_init__(self) -> None:
        bad = []
        if not self.base_url:
            bad.append("base_url: name the judge's server, e.g. http://host:8000/v1")
        if self.model is None and self.tokenizer is None:
            bad.append("model or tokenizer: name the judge model (its tokenizer renders the prompt)")
        if self.max_new_tokens < 1:
            bad.append(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            bad.append(f"temperature: must be >= 0, got {self.temperature}")
        if self.concurrency < 1:
            bad.append(f"concurrency: must be >= 1, got {self.concurrency}")
        if bad:
            raise ValueError("JudgeSettings: " + "; ".join(bad))

    def recorded(self) -> dict[str, Any]:
        """The settings as ``judge-<tag>.json`` keeps them (no API key)."""
        return {k: v for k, v in asdict(self).items() if k != "api_key"}


# ------------------------------------------------------------------ the prompt and the verdict


def judge_messages(question: str, reference: str, answer: str) -> list[dict[str, str]]:
    """The chat the judge sees: our system prompt, then the problem and the two final answers."""
    user = JUDGE_USER_TEMPLATE.format(question=question.strip(), reference=reference.strip(), answer=answer.strip())
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


_VERDICT_LINE = re.compile(r"verdict\s*:\s*(not[ _-]?equivalent|equivalent)", re.IGNORECASE)


def parse_verdict(reply: str) -> str:
    """``EQUIVALENT``, ``NOT_EQUIVALENT`` or ``UNPARSED`` for a judge's reply (the rule: the module docstring)."""
    if "</think>" in reply:
        reply = reply.rsplit("</think>", 1)[1]
    elif "<think>" in reply:
        return UNPARSED  # still thinking when the budget ran out
    lines = [line for line in reply.splitlines() if line.strip()]
    if not lines:
        return UNPARSED
    last = re.sub(r"[*`]", "", lines[-1]).strip().removesuffix(".").strip()
    match = _VERDICT_LINE.fullmatch(last)
    if match is None:
        return UNPARSED
    return EQUIVALENT if match.group(1).lower() == "equivalent" else NOT_EQUIVALENT


# ------------------------------------------------------------------ agreement (pure functions)


def cohen_kappa(both_right: int, mv_only: int, judge_only: int, both_wrong: int) -> float | None:
    """Cohen's kappa of two graders on a 2x2 table; None when undefined (chance agreement is 1: one label only).

    ``kappa = (p_o - p_e) / (1 - p_e)``, ``p_o`` the observed agreement, ``p_e`` the agreement expected from the two
    graders' own rates of "right". Written here for a 2x2 table: scikit-learn's ``cohen_kappa_score`` is not a
    dependency of the kit.
    """
    if min(both_right, mv_only, judge_only, both_wrong) < 0:
        raise ValueError(f"counts must be >= 0, got {(both_right, mv_only, judge_only, both_wrong)}")
    n = both_right + mv_only + judge_only + both_wrong
    if n == 0:
        return None
    p_observed = (both_right + both_wrong) / n
    mv_right, judge_right = (both_right + mv_only) / n, (both_right + judge_only) / n
    p_chance = mv_right * judge_right + (1 - mv_right) * (1 - judge_right)
    if p_chance >= 1:
        return None
    return (p_observed - p_chance) / (1 - p_chance)


# (math-verify says right, the judge says equivalent) -> the cell of the 2x2 table
TABLE_CELLS = {
    (True, True): "both_right",
    (True, False): "math_verify_only",
    (False, True): "judge_only",
    (False, False): "both_wrong",
}


def agreement(answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """math-verify against the judge over ``answers`` (rows with ``math_verify`` (bool) and ``judge`` (a verdict)).

    Counts of every verdict; on the answers with a parsed verdict, the 2x2 table, the agreement rate with its
    Wilson interval, Cohen's kappa, and the disagreeing rows (question id, sample, reference, answer, both
    verdicts).
    """
    counts = {v: 0 for v in VERDICTS}
    table = dict.fromkeys(TABLE_CELLS.values(), 0)
    disagreements = []
    for row in answers:
        verdict = row["judge"]
        if verdict not in counts:
            raise ValueError(f"unknown judge verdict {verdict!r} for {row.get('question_id')!r}; one of {VERDICTS}")
        counts[verdict] += 1
        if verdict in (UNPARSED, NO_ANSWER):
            continue
        mv, judged = bool(row["math_verify"]), verdict == EQUIVALENT
        table[TABLE_CELLS[mv, judged]] += 1
        if mv != judged:
            disagreements.append(
                {k: row.get(k) for k in ("question_id", "sample", "benchmark", "reference", "answer")}
                | {"math_verify": mv, "judge": verdict}
            )
    compared = sum(table.values())
    agreed = table["both_right"] + table["both_wrong"]
    low, high = wilson_interval(agreed, compared)
    return {
        "answers": len(answers),
        "verdicts": counts,
        "math_verify_right": sum(bool(row["math_verify"]) for row in answers),
        "compared": compared,
        "table": table,
        "agreed": agreed,
        "agreement_rate": agreed / compared if compared else None,
        "agreement_ci95": [low, high] if compared else None,
        "cohen_kappa": cohen_kappa(
            table["both_right"], table["math_verify_only"], table["judge_only"], table["both_wrong"]
        ),
        "disagreements": disagreements,
    }


# ------------------------------------------------------------------ asking the judge


@dataclass(frozen=True)
class JudgeReply:
    text: str  # the judge's reply, decoded
    finish: str  # FINISH_* of the backend: "length" means the budget ran out
    verdict: str  # parse_verdict(text)


def judge_prompt_ids(tokenizer, question: str, reference: str, answer: str, thinking: bool = False) -> list[int]:
    """The chat-templated prompt as token ids (``enable_thinking`` is read by Qwen3's template, ignored by others)."""
    text = tokenizer.apply_chat_template(
        judge_messages(question, reference, answer),
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=thinking,
    )
    return tokenizer.encode(text, add_special_tokens=False)


def judge_answers(
    backend: Backend, items: Sequence[tuple[str, str, str]], settings: JudgeSettings, progress: bool = True
) -> list[JudgeReply]:
    """The judge's reply to each (question, reference, answer) triple, in order; each distinct triple asked once."""
    distinct = list(dict.fromkeys(items))
    sampling = SamplingParams(temperature=settings.temperature)
    bar = progress_bar(len(distinct), f"judge ({backend.name})", "answer", disable=not progress)

    async def ask_all() -> list[JudgeReply]:
        gate = asyncio.Semaphore(settings.concurrency)

        async def ask(i: int, item: tuple[str, str, str]) -> JudgeReply:
            ids = judge_prompt_ids(backend.tokenizer, *item, thinking=settings.thinking)
            request = SegmentRequest(ids, settings.max_new_tokens, sampling=sampling, seed=0, key=f"judge-{i}")
            async with gate:
                segment = await backend.generate(request)
            backend.release(request.key)
            bar.update(1)
            text = backend.tokenizer.decode(segment.ids, skip_special_tokens=True)
            return JudgeReply(text, segment.finish, parse_verdict(text))

        return await asyncio.gather(*(ask(i, item) for i, item in enumerate(distinct)))

    try:
        replies = dict(zip(distinct, run_coroutine(ask_all())))
    finally:
        bar.close()
    return [replies[item] for item in items]


# ------------------------------------------------------------------ files


def judge_path(records_path: str | os.PathLike) -> Path:
    """``judge-<tag>.json`` beside ``records-<tag>.jsonl``."""
    path = Path(records_path)
    if not (path.name.startswith("records-") and path.name.endswith(".jsonl")):
        raise ValueError(f"{path}: expected an evaluation's records-<tag>.jsonl")
    return path.with_name("judge-" + path.name.removeprefix("records-").removesuffix(".jsonl") + ".json")


def read_answers(records_path: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per graded record: ids, the problem, the reference, the extracted answer and math-verify's verdict."""
    rows = []
    for i, record in enumerate(iter_json_lines(records_path), 1):
        missing = [k for k in ("question_id", "question", "gold_answer", "correct") if k not in record]
        if missing or record["correct"] is None:
            raise ValueError(
                f"{records_path}: record {i} has no {', '.join(missing) or 'grade (correct is null)'}: "
                "the judge re-grades the graded records an evaluation wrote (thor_core/evaluation/runner.py)"
            )
        if record["gold_answer"] is None:
            raise ValueError(f"{records_path}: record {i} ({record['question_id']!r}) has no reference answer")
        metadata = record.get("metadata") or {}
        rows.append(
            {
                "question_id": record["question_id"],
                "sample": metadata.get("sample", 0),
                "benchmark": metadata.get("benchmark"),
                "question": record["question"],
                "reference": record["gold_answer"],
                "answer": record.get("final_answer"),
                "math_verify": bool(record["correct"]),
            }
        )
    return rows


def judge_records(
    records_paths: Iterable[str | os.PathLike], backend: Backend, settings: JudgeSettings, progress: bool = True
) -> dict[Path, dict[str, Any]]:
    """Judge every answer of the records files (all in one batch) and write ``judge-<tag>.json`` beside each.

    Returns records path -> what its ``judge-<tag>.json`` holds: ``judge`` (the settings, the served model, the
    prompt's SHA-256), ``agreement`` (``agreement``) and ``answers`` (per answer: ids, reference, answer,
    ``math_verify``, ``judge`` (the verdict), ``judge_reply``, ``judge_finish``).
    """
    files = {Path(p): read_answers(p) for p in records_paths}
    asked = [row for rows in files.values() for row in rows if row["answer"] is not None]
    replies = judge_answers(backend, [(r["question"], r["reference"], r["answer"]) for r in asked], settings, progress)
    for row, reply in zip(asked, replies):
        row.update(judge=reply.verdict, judge_reply=reply.text, judge_finish=reply.finish)
    about = {
        **settings.recorded(),
        "served_model": getattr(backend, "model", None),  # the OpenAI backend asks the server when not given
        "backend": backend.name,
        "prompt_sha256": PROMPT_SHA256,
    }
    results = {}
    for path, rows in files.items():
        for row in rows:
            row.setdefault("judge", NO_ANSWER)
            del row["question"]  # in the records already
        results[path] = {"records": path.name, "judge": about, "agreement": agreement(rows), "answers": rows}
        write_json_atomic(judge_path(path), results[path])
    return results


def find_records(run_dir: str | os.PathLike) -> list[Path]:
    """Every ``records-<tag>.jsonl`` in ``run_dir`` and its subfolders (notebook 04: one per rung)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a folder: give an evaluation's out_dir or notebook 04's run folder")
    found = sorted(run_dir.rglob("records-*.jsonl"))
    if not found:
        raise FileNotFoundError(
            f"{run_dir} holds no records-<tag>.jsonl: run an evaluation into it first (python -m thor_core.evaluation)"
        )
    return found


def tokenizer_folder(name: str) -> str:
    """A local folder with the judge's tokenizer: embedded names and folders as ``thor_core.models`` resolves them;
    a hub id fetched without its weights (``TOKENIZER_FILES``), which ``models.resolve_model`` would download."""
    if name.startswith(EMBEDDED_PREFIX) or Path(name).expanduser().exists():
        return str(resolve_model(name))
    from huggingface_hub import snapshot_download  # only for hub ids

    try:
        return snapshot_download(name, allow_patterns=TOKENIZER_FILES)
    except Exception as e:  # not cached and offline, no network, no such repository
        raise ModelNotAvailable(
            f"the judge's tokenizer {name!r} is not a local folder, an embedded model, or a hub id whose tokenizer "
            f"files can be fetched ({type(e).__name__}: {e}); give --tokenizer FOLDER (the served model's config "
            "and tokenizer files)"
        ) from e


def judge_run(run_dir: str | os.PathLike, settings: JudgeSettings, progress: bool = True) -> dict[Path, dict]:
    """Re-grade every records file under ``run_dir`` with the judge at ``settings.base_url`` (``judge_records``).

    Stops at once, naming the URL, when no server answers there or it does not serve ``settings.model``.
    """
    from thor_core.backends.openai import OpenAICompletionsBackend  # optional: the openai client

    records = find_records(run_dir)
    with OpenAICompletionsBackend(
        settings.base_url,
        model=settings.model,
        tokenizer=tokenizer_folder(settings.tokenizer or settings.model),
        api_key=settings.api_key,
        vllm_extensions=settings.vllm_extensions,
    ) as backend:
        served = backend.health_check()
        if settings.model is not None and settings.model not in served:
            raise ValueError(f"{backend.base_url} serves {served}, not {settings.model!r}: give --model one of those")
        return judge_records(records, backend, settings, progress)


def judge_markdown(results: dict[Path, dict[str, Any]], root: str | os.PathLike | None = None, show: int = 20) -> str:
    """The agreement per records file as a table, then up to ``show`` disagreeing pairs of each."""

    def name(path: Path) -> str:
        return str(path.relative_to(root)) if root is not None else path.name

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| records | answers | judged | unparsed | no answer | math-verify right | judge equivalent "
        "| agreement [95% CI] | kappa | disagree |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path, result in results.items():
        a = result["agreement"]
        ci = f" [{pct(a['agreement_ci95'][0])}, {pct(a['agreement_ci95'][1])}]" if a["agreement_ci95"] else ""
        kappa = "-" if a["cohen_kappa"] is None else f"{a['cohen_kappa']:.2f}"
        lines.append(
            f"| {name(path)} | {a['answers']} | {a['compared']} | {a['verdicts'][UNPARSED]} | "
            f"{a['verdicts'][NO_ANSWER]} | {a['math_verify_right']} | {a['verdicts'][EQUIVALENT]} | "
            f"{pct(a['agreement_rate'], '%')}{ci} | {kappa} | {len(a['disagreements'])} |"
        )
    for path, result in results.items():
        rows = result["agreement"]["disagreements"]
        if not rows:
            continue
        lines += [f"\nDisagreements in {name(path)} ({len(rows)}):\n"]
        lines += ["| question | sample | reference | answer | math-verify | judge |", "|---|---|---|---|---|---|"]
        for r in rows[:show]:
            cells = [r["question_id"], r["sample"], r["reference"], r["answer"], r["math_verify"], r["judge"]]
            lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
        if len(rows) > show:
            lines.append(f"\n... and {len(rows) - show} more in {judge_path(path).name}")
    return "\n".join(lines)


# ------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m thor_core.evaluation judge RUN_DIR --base-url http://host:8000/v1 --model Qwen/Qwen3-32B``."""
    ap = argparse.ArgumentParser(
        prog="python -m thor_core.evaluation judge",
        description="Re-grade a finished evaluation's answers with an LLM judge (math-verify stays the default); "
        "writes judge-<tag>.json beside each records-<tag>.jsonl and prints the agreement.",
    )
    ap.add_argument("run_dir", help="an evaluation's out_dir or notebook 04's run folder (searched recursively)")
    for name, f in JudgeSettings.__dataclass_fields__.items():
        flag, help_text = "--" + name.replace("_", "-"), f.metadata["help"]
        if f.type == "bool":
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        elif name == "base_url":
            ap.add_argument(flag, required=True, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            ap.add_argument(flag, type=kind, default=f.default, help=f"{help_text} (default: {f.default})")
    ap.add_argument("--show", type=int, default=20, help="disagreeing pairs printed per records file")
    args = vars(ap.parse_args(argv))
    run_dir, show = args.pop("run_dir"), args.pop("show")
    results = judge_run(run_dir, JudgeSettings(**args))
    print(judge_markdown(results, root=run_dir, show=show))
    print("\n" + "\n".join(f"judge: {judge_path(p)}" for p in results))
    return 0
