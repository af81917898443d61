"""Decontamination (thor_core.data.decontam) and the training sets it guards (thor_core.data.heldout.training_set,
the mixes of thor_core.data.benchmarks): the two rules, removal and the report, TIRGen's and RL's run folders, and
the seeded, validated mix. Offline sets and small local files only; nothing touches the hub."""

from __future__ import annotations

import json
from contextlib import ExitStack

import pytest

from thor_core.data.benchmarks import Problem, load_benchmark, load_problems, mix_order, parse_sources
from thor_core.data.decontam import REPORT_FILE, Reference, report_line, word_tokens
from thor_core.data.heldout import EVAL_BENCHMARKS, PAPER_BENCHMARKS, decontamination_benchmarks, training_set
from thor_core.data.problems import generate_problems
from thor_core.files import REPO_ROOT
from thor_core.rl.config import RLParams
from thor_core.rl.run import decontaminated_problems
from thor_core.tirgen.config import TIRGenParams
from thor_core.tirgen.config import load_params as tirgen_params
from thor_core.tirgen.steps import stage

AIME = load_benchmark("aime24")


def _q(i: str, text: str) -> Problem:
    return Problem(f"train/{i}", text, "1", "train", "train")


def _words(problem: Problem, start: int, n: int) -> str:
    return " ".join(word_tokens(problem.question)[start : start + n])


# ------------------------------------------------------------------ the rules


def test_a_shared_13_word_run_is_caught_and_a_shorter_shared_phrase_is_not():
    target = AIME[0]
    reference = Reference.build({"aime24": AIME})
    paraphrase = _q("para", f"A new setting. Recall that {_words(target, 10, 13)}; what then is the total?")
    phrase = _q("phrase", f"A new setting. Recall that {_words(target, 10, 12)}; what then is the total?")
    hits = reference.hits([paraphrase, phrase])
    assert set(hits) == {"train/para"}
    assert vars(hits["train/para"]) == {"rule": "ngram", "benchmark": "aime24", "match": target.id}


def test_the_exact_rule_sees_through_case_dollars_and_spacing():
    target = AIME[3]
    copy = _q("copy", "  " + target.question.replace("$", "").upper() + " ")
    (hit,) = Reference.build({"aime24": AIME}).hits([copy]).values()
    assert (hit.rule, hit.match) == ("exact", target.id)


def test_a_phrase_shared_by_more_than_ten_training_questions_is_boilerplate():
    """GPT-3's rule: a 13-gram that many training questions share is a stock phrase (here the AIME answer form)."""
    stock = "is m/n, where m and n are relatively prime positive integers. Find m+n."
    evaluation = [
        Problem("eval/0", f"A fair coin is tossed 7 times. The probability of 3 heads {stock}", "1", "e", "test")
    ]
    reference = Reference.build({"eval": evaluation})
    training = [
        _q(str(i), f"A die is rolled {i + 2} times. The chance that every roll differs {stock}") for i in range(11)
    ]
    assert reference.hits(training) == {}  # 11 > 10 share the phrase: none removed
    assert len(reference.hits(training[:10])) == 10  # 10 do not make it boilerplate


# ------------------------------------------------------- removal and the report


def test_training_set_removes_and_reports_what_it_removed():
    generated = generate_problems(12, seed=5)
    planted = [  # an evaluation set holding generated question 2 verbatim and question 5 (29 words) in a longer text
        Problem("leak/a", generated[2].question.upper(), "x", "leak", "test"),
        Problem("leak/b", "Background first. " + generated[5].question + " Give the least one.", "x", "leak", "test"),
    ]
    kept, report = training_set("generated", 12, 5, against={"leak": planted, "aime24": AIME})
    assert [p.id for p in kept] == [p.id for i, p in enumerate(generated) if i not in (2, 5)]
    assert (report["checked"], report["removed"], report["kept"]) == (12, 2, 10)
    assert report["benchmarks"] == {"leak": 2, "aime24": 30}
    assert report["removed_by"] == {"leak": {"exact": 1, "ngram": 1}, "aime24": {"exact": 0, "ngram": 0}}
    assert report["removed_ids"] == [
        {"id": generated[2].id, "rule": "exact", "benchmark": "leak", "match": "leak/a"},
        {"id": generated[5].id, "rule": "ngram", "benchmark": "leak", "match": "leak/b"},
    ]
    line = report_line(report)
    assert "12 training questions checked against 2 evaluation sets" in line and "2 removed" in line
    assert "leak 1 exact + 1 13-gram" in line and "\n" not in line


def test_tirgen_writes_the_report_beside_its_problems_and_prints_one_line(tmp_path, capsys):
    """The cpu profiles' case: generated problems against the offline evaluation sets (nothing removed)."""
    p = TIRGenParams(n_problems=6, problem_seed=1000)
    with ExitStack() as stack:
        step, problems = next(stage(p, tmp_path, stack))  # the first step loads no model
    assert step == "problems" and len(problems) == 6
    report = json.loads((tmp_path / REPORT_FILE).read_text())
    assert (report["checked"], report["removed"]) == (6, 0) and list(report["benchmarks"]) == list(EVAL_BENCHMARKS)
    assert (tmp_path / "problems.jsonl").exists()
    assert capsys.readouterr().out.strip() == report_line(report)


def test_rl_removes_a_contaminated_question_from_a_file(tmp_path):
    leaked = AIME[5]
    path = tmp_path / "rl.jsonl"
    rows = [{"problem": "What is 6*7?", "solution": "42"}, {"problem": leaked.question, "solution": leaked.answer}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems, report = decontaminated_problems(RLParams(problems=str(path), n_problems=2))
    assert [q.question for q in problems] == ["What is 6*7?"]
    assert report["removed_ids"] == [{"id": "rl/1", "rule": "exact", "benchmark": "aime24", "match": leaked.id}]


def test_registry_sets_are_also_checked_against_the_paper_benchmarks(tmp_path):
    assert decontamination_benchmarks("generated") == EVAL_BENCHMARKS
    (tmp_path / "own.jsonl").write_text('{"problem": "1+1?", "solution": "2"}\n')
    assert decontamination_benchmarks(str(tmp_path / "own.jsonl")) == EVAL_BENCHMARKS
    assert decontamination_benchmarks("dapo17k+deepmath+deepscaler") == (*EVAL_BENCHMARKS, *PAPER_BENCHMARKS)


# ------------------------------------------------------------------- the mix


def test_mix_order_follows_the_weights_in_every_prefix_and_refills_from_the_others():
    assert mix_order([5, 5, 5], [1, 1, 1], 6) == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    order = mix_order([100, 100], [2, 1], 30)
    assert [j for j, _ in order].count(0) == 20 and order == mix_order([100, 100], [2, 1], 60)[:30]
    assert [j for j, _ in mix_order([1, 10], [1, 1], 5)] == [0, 1, 1, 1, 1]  # source 0 used up: 1 takes its share
    assert len(mix_order([2, 3], [1, 1], 100)) == 5  # everything, when n is larger than all the sets


def test_a_mix_is_seeded_prefix_stable_and_keeps_row_ids():
    mix = load_problems("aime24*2+cnmo", 15, seed=3)
    assert [p.source for p in mix].count("aime24") == 10 and [p.source for p in mix].count("cnmo") == 5
    assert [p.id for p in mix] == [p.id for p in load_problems("aime24*2+cnmo", 15, seed=3)]
    assert [p.id for p in load_problems("aime24*2+cnmo", 9, seed=3)] == [p.id for p in mix[:9]]
    assert [p.id for p in load_problems("aime24*2+cnmo", 15, seed=4)] != [p.id for p in mix]
    assert {p.id for p in mix} <= {p.id for p in AIME} | {p.id for p in load_benchmark("cnmo")}
    assert len(load_problems("aime25+cnmo", 100, seed=0)) == 15 + 18


def test_a_mix_of_hub_sets_reads_local_copies(tmp_path):
    dapo, deepmath = tmp_path / "dapo.jsonl", tmp_path / "deepmath.parquet"
    dapo.write_text("".join(json.dumps({"prompt": f"What is {i}+1?", "solution": str(i + 1)}) + "\n" for i in range(4)))
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": f"Find {i}^2.", "final_answer": str(i * i), "difficulty": 5.0, "topic": "t",
             "r1_solution_1": "long"} for i in range(6)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), deepmath)
    mix = load_problems(f"dapo17k={dapo}+deepmath={deepmath}", 6, seed=1)
    assert sorted(p.source for p in mix) == ["dapo17k"] * 3 + ["deepmath"] * 3
    for p in mix:  # ids keep the row of the full set, so the answer is that row's
        row = int(p.id.split("/")[1])
        assert p.answer == (str(row + 1) if p.source == "dapo17k" else str(row * row))


def test_bad_mixes_fail_naming_the_part_and_the_known_sets(tmp_path):
    with pytest.raises(ValueError, match="unknown set 'deepmth'") as err:
        parse_sources("dapo17k+deepmth")
    assert "deepmath" in str(err.value) and "deepscaler" in str(err.value)
    for spec, message in [
        ("dapo17k+deepmath*0", "must be a positive number"),
        ("dapo17k+deepmath*x", "must be a positive number"),
        ("aime24=copy.jsonl+cnmo", "ships offline"),
        (f"deepmath={tmp_path / 'missing.parquet'}", "no local copy"),
        ("dapo17k+dapo17k", "named twice"),
        ("dapo17k++deepmath", "an empty part"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_sources(spec)
    with pytest.raises(ValueError, match="TIRGenParams: problems 'dapo17k\\+deepmth': unknown set"):
        TIRGenParams(problems="dapo17k+deepmth")
    with pytest.raises(ValueError, match="RLParams: .*unknown set 'torl'"):
        RLParams(problems="torl")


@pytest.mark.parametrize("profile", ["gpu-1.5b", "gpu-7b"])
def test_the_gpu_tirgen_profiles_mix_the_papers_three_sources(profile):
    p = tirgen_params(REPO_ROOT / "params" / profile / "01_tirgen.yaml")
    assert [s.name for s in parse_sources(p.problems)] == ["dapo17k", "deepmath", "deepscaler"]
    assert decontamination_benchmarks(p.problems) == (*EVAL_BENCHMARKS, *PAPER_BENCHMARKS)
