"""Benchmark loaders (thor_core.data.benchmarks): offline package sets, user files, hub
entries read from local copies, and the offline error. Nothing touches the hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from thor_core.data.benchmarks import (
    HUB_BENCHMARKS,
    OFFLINE_BENCHMARKS,
    BenchmarkUnavailable,
    Problem,
    hub_problems,
    load_benchmark,
    load_file,
)

MMATH_COUNTS = {"math500_mmath": 311, "aime24": 30, "aime25": 15, "cnmo": 18}


@pytest.mark.parametrize(("name", "count"), [*MMATH_COUNTS.items(), ("humaneval", 164)])
def test_offline_benchmark_counts_and_fields(name, count):
    problems = load_benchmark(name)
    assert len(problems) == count
    assert len({p.id for p in problems}) == count
    for p in problems:
        assert isinstance(p, Problem)
        assert p.question.strip() and p.answer.strip() and p.id
        assert (p.source, p.split) == (name, "test")


def test_offline_names_are_listed():
    assert set(OFFLINE_BENCHMARKS) == {*MMATH_COUNTS, "humaneval"}


def test_mmath_answers_are_bare_latex():
    for name in MMATH_COUNTS:
        for p in load_benchmark(name):
            assert not p.answer.startswith("$") and not p.answer.endswith("$"), p
    assert all(p.answer.isdigit() for p in load_benchmark("aime24"))


def test_humaneval_carries_prompt_test_entry_point():
    problems = load_benchmark("humaneval")
    for p in problems:
        meta = p.metadata
        assert meta["kind"] == "code" and meta["prompt"] == p.question
        assert f"def {meta['entry_point']}" in meta["prompt"]
        assert "def check" in meta["test"]
    assert problems[0].id == "HumanEval/0"


def test_limit():
    assert [p.id for p in load_benchmark("aime24", limit=3)] == [p.id for p in load_benchmark("aime24")[:3]]


# ------------------------------------------------------------ user files

ROWS = [
    {"problem": "What is 1+1?", "solution": r"It is $\boxed{2}$.", "uid": "a", "level": 1},
    {"problem": "What is half of 1?", "solution": r"\frac{1}{2}", "uid": "b", "level": 2},
]


def _write(tmp_path, kind, rows=ROWS):
    path = tmp_path / f"mine.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "json":
        path.write_text(json.dumps(rows))
    elif kind == "csv":
        import csv

        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet"])
def test_load_file_with_mapping(tmp_path, kind):
    problems = load_file(_write(tmp_path, kind), question="problem", answer="solution", id="uid")
    assert [(p.id, p.question, p.answer) for p in problems] == [
        ("mine/a", "What is 1+1?", "2"),  # a full solution is reduced to its last boxed answer
        ("mine/b", "What is half of 1?", r"\frac{1}{2}"),
    ]
    assert str(problems[0].metadata["level"]) == "1"


def test_load_benchmark_dispatches_paths(tmp_path):
    path = _write(tmp_path, "jsonl")
    assert [p.answer for p in load_benchmark(path, limit=1)] == ["2"]  # defaults: problem / solution


def test_missing_column_names_the_column_and_the_choices(tmp_path):
    path = _write(tmp_path, "jsonl")
    with pytest.raises(ValueError) as err:
        load_file(path, question="question", answer="solution")
    message = str(err.value)
    assert "'question'" in message and "problem, solution, uid" in message and "question=<column" in message


def test_row_errors_name_the_row(tmp_path):
    rows = [ROWS[0], {"problem": "", "solution": "3", "uid": "c", "level": 3}]
    with pytest.raises(ValueError, match="row 1 has an empty question"):
        load_file(_write(tmp_path, "jsonl", rows))
    with pytest.raises(ValueError, match="row 1: field 'solution'"):
        load_file(_write(tmp_path, "jsonl", [ROWS[0], {"problem": "x"}]))


def test_bad_paths_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_file(tmp_path / "missing.jsonl")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_file(tmp_path / "data.txt")
    with pytest.raises(ValueError, match="neither a known benchmark nor an existing file"):
        load_benchmark("no-such-benchmark")


# ------------------------------------------- hub entries from local copies


def test_registry_covers_the_paper_sets():
    assert {"math500", "aime24_hf", "aime25_full", "amc23", "minerva", "olympiadbench", "gsm8k"} <= set(HUB_BENCHMARKS)
    assert {"torl28k", "deepscaler", "dapo17k", "deepmath"} <= set(HUB_BENCHMARKS)
    assert not set(HUB_BENCHMARKS) & set(OFFLINE_BENCHMARKS)


def test_gsm8k_answers_keep_the_final_number(tmp_path):
    path = _write(tmp_path, "jsonl", [{"question": "How many?", "answer": "3 * 400 = 1200\n#### 1,200"}])
    (p,) = load_benchmark("gsm8k", local_path=path)
    assert (p.id, p.answer, p.source) == ("gsm8k/0", "1200", "gsm8k")


def test_olympiadbench_joins_answer_lists(tmp_path):
    rows = [{"id": 7, "question": "Find x and y.", "final_answer": ["$3$", "$\\frac{1}{2}$"], "subfield": "Algebra"}]
    (p,) = load_benchmark("olympiadbench", local_path=_write(tmp_path, "parquet", rows))
    assert (p.id, p.answer, p.metadata["subfield"]) == ("olympiadbench/7", r"3, \frac{1}{2}", "Algebra")


def test_verl_style_rows_for_torl_and_dapo(tmp_path):
    torl = [
        {
            "data_source": "torl",
            "prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 6*7?"}],
            "reward_model": {"ground_truth": "42", "style": "rule"},
        }
    ]
    (p,) = load_benchmark("torl28k", local_path=_write(tmp_path, "parquet", torl))
    assert (p.question, p.answer, p.split) == ("What is 6*7?", "42", "train")
    dapo_prompt = (
        "Solve the following math problem step by step. The last line of your response should be of the form "
        "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\nWhat is 2+3?\n\n"
        'Remember to put your answer on its own line after "Answer:".'
    )
    (tmp_path / "dapo").mkdir()
    (q,) = load_benchmark(
        "dapo17k", local_path=_write(tmp_path / "dapo", "jsonl", [{"prompt": dapo_prompt, "solution": "5"}])
    )
    assert (q.question, q.answer) == ("What is 2+3?", "5")


def test_the_cold_start_sources_map_their_hub_columns(tmp_path):
    """DAPO-17k (processed, config en), DeepMath-103K and DeepScaleR-40k, as their dataset cards list the columns."""
    dapo = {
        "prompt": "Solve the following math problem step by step. The last line of your response should be of the "
        "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\nFind $x$ if $2x=8$."
        '\n\nRemember to put your answer on its own line after "Answer:".',
        "solution": "4",
        "data_source": "math_dapo",
        "source_prompt": [{"role": "user", "content": "..."}],
        "ability": "MATH",
        "reward_model": {"ground_truth": "4", "style": "rule-lighteval/MATH_v2"},
        "extra_info": {"index": "9a9b6eb4-a1cb-49d1-8c1e-62eaf2f74079"},
    }
    (d,) = load_benchmark("dapo17k", local_path=_write(tmp_path, "parquet", [dapo]))
    assert (d.id, d.question, d.answer, d.split) == ("dapo17k/0", "Find $x$ if $2x=8$.", "4", "train")
    assert d.metadata == {"data_source": "math_dapo", "ability": "MATH"}  # nested columns stay out
    deepmath = {
        "question": "Evaluate $\\lim_{x\\to 0} \\frac{\\sin x}{x}$.",
        "final_answer": "1",
        "difficulty": 4.5,
        "topic": "Mathematics -> Calculus -> Limits",
        **{f"r1_solution_{i}": "<think>a long R1 solution</think> ... \\boxed{1}" for i in (1, 2, 3)},
    }
    (m,) = load_benchmark("deepmath", local_path=_write(tmp_path, "parquet", [deepmath]))
    assert (m.id, m.question, m.answer) == ("deepmath/0", deepmath["question"], "1")
    assert m.metadata == {"difficulty": 4.5, "topic": "Mathematics -> Calculus -> Limits"}  # no R1 solutions
    scaler = {"problem": "What is $3^2$?", "answer": "$9$", "solution": "$3^2 = 9$, so the answer is $\\boxed{9}$."}
    (c,) = load_benchmark("deepscaler", local_path=_write(tmp_path, "json", [scaler]))  # the hub's deepscaler.json
    assert (c.id, c.question, c.answer, c.metadata) == ("deepscaler/0", "What is $3^2$?", "9", {})


def test_file_only_set_without_local_copy_says_where_to_get_it():
    with pytest.raises(BenchmarkUnavailable, match="GAIR-NLP/ToRL") as err:
        load_benchmark("torl28k")
    assert "local_path=" in str(err.value)


def test_hub_benchmark_offline_error(tmp_path):
    """With the hub off and an empty cache, loading a hub set fails fast and says what to do."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = textwrap.dedent(
        """
        from thor_core.data.benchmarks import BenchmarkUnavailable, load_benchmark
        try:
            load_benchmark("gsm8k")
        except BenchmarkUnavailable as e:
            print(e)
        else:
            raise SystemExit("loaded gsm8k with the hub offline")
        """
    )
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    message = run.stdout
    assert "openai/gsm8k" in message
    for name in OFFLINE_BENCHMARKS:
        assert name in message
    assert "local_path=" in message and "load_file(" in message


def test_hub_rows_as_a_datasets_table_map_the_drawn_rows_only():
    """The hub path hands ``hub_problems`` a ``datasets.Dataset``: the drawn rows, ids from their row numbers."""
    import datasets

    rows = datasets.Dataset.from_list(
        [{"question": f"Find {i}^2.", "final_answer": str(i * i), "difficulty": 5.0, "topic": "t", "r1_solution_1": "x"}
         for i in range(5)]
    )  # fmt: skip
    assert [(p.id, p.answer, p.metadata) for p in hub_problems("deepmath", rows, [3, 1])] == [
        ("deepmath/3", "9", {"difficulty": 5.0, "topic": "t"}),
        ("deepmath/1", "1", {"difficulty": 5.0, "topic": "t"}),
    ]
