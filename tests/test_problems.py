"""The procedural problem generator (thor_core.data.problems).

Every gold answer is re-derived here WITHOUT sympy: brute force, plain
integers and ``fractions.Fraction``, from the ``params`` each problem records.
"""

from __future__ import annotations

import itertools
import re
from fractions import Fraction
from math import isqrt

import pytest

from thor_core.data.benchmarks import Problem, load_benchmark
from thor_core.data.decontam import Reference, decontaminate
from thor_core.data.heldout import EVAL_BENCHMARKS, find_overlap
from thor_core.data.problems import KINDS, LEVELS, generate_problems
from thor_core.grading import Grader

# ------------------------------------------------ reading the gold LaTeX

_FRAC = re.compile(r"(-)?\s*\\frac\{(\d+)\}\{(\d+)\}")


def number(tex: str) -> Fraction:
    """An integer or ``[-] \\frac{p}{q}``."""
    tex = tex.strip()
    if m := _FRAC.fullmatch(tex):
        return Fraction(int(m[2]), int(m[3])) * (-1 if m[1] else 1)
    assert re.fullmatch(r"-?\d+", tex), f"not a plain number: {tex!r}"
    return Fraction(int(tex))


def numbers(tex: str) -> list[Fraction]:
    return [number(part) for part in tex.split(", ")]


def radical_squared(tex: str) -> Fraction:
    """Square of a positive ``c``, ``c \\sqrt{r}``, ``\\frac{c \\sqrt{r}}{d}`` or ``\\frac{c}{d}``."""
    tex = tex.strip()
    m = re.fullmatch(r"\\frac\{(.+)\}\{(\d+)\}", tex)
    top, den = (m[1], int(m[2])) if m else (tex, 1)
    m = re.fullmatch(r"(\d+)?\s*(?:\\sqrt\{(\d+)\})?", top.strip())
    assert m and (m[1] or m[2]), f"not a radical: {tex!r}"
    coeff, radicand = int(m[1] or 1), int(m[2] or 1)
    assert m[2] is None or all(radicand % (k * k) for k in range(2, isqrt(radicand) + 1)), (
        f"radical not simplified: {tex}"
    )
    return Fraction(coeff * coeff * radicand, den * den)


# ------------------------------------------------ independent arithmetic


def gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return abs(a)


def factorize(n: int) -> dict[int, int]:
    out, p = {}, 2
    while p * p <= n:
        while n % p == 0:
            out[p] = out.get(p, 0) + 1
            n //= p
        p += 1
    if n > 1:
        out[n] = out.get(n, 0) + 1
    return out


def power_mod(a: int, e: int, m: int) -> int:
    result, a = 1, a % m
    while e:
        if e & 1:
            result = result * a % m
        a, e = a * a % m, e >> 1
    return result


def pascal(n: int) -> list[int]:
    row = [1]
    for _ in range(n):
        row = [a + b for a, b in zip([0, *row], [*row, 0], strict=True)]
    return row


def factorial(n: int) -> int:
    out = 1
    for k in range(2, n + 1):
        out *= k
    return out


def heron16(a: int, b: int, c: int) -> int:
    """16 * area^2 of a triangle with sides a, b, c."""
    return (a + b + c) * (-a + b + c) * (a - b + c) * (a + b - c)


def poly_at(coeffs: list[int], x: Fraction) -> Fraction:
    value = Fraction(0)
    for c in coeffs:
        value = value * x + c
    return value


def check(problem: Problem) -> None:
    """Assert the gold answer from the recorded params, by independent means."""
    t, q, ans = problem.metadata["template"], problem.metadata["params"], problem.answer
    if t == "product":
        assert number(ans) == q["a"] * q["b"]
    elif t == "power":
        value = 1
        for _ in range(q["exp"]):
            value *= q["base"]
        assert number(ans) == value
    elif t == "unit_fractions":
        assert number(ans) == sum(Fraction(1, d) for d in q["dens"])
    elif t == "factorial_digit_sum":
        assert number(ans) == sum(map(int, str(factorial(q["n"]))))
    elif t == "modpow":
        assert number(ans) == power_mod(q["a"], q["e"], q["m"])
    elif t == "inverse":
        x = number(ans)
        assert x.denominator == 1 and 0 <= x < q["m"] and q["a"] * int(x) % q["m"] == 1
    elif t == "crt":
        step = max(q["moduli"])
        start = q["residues"][q["moduli"].index(step)]
        x = next(
            x
            for x in itertools.count(start, step)
            if all(x % m == r for m, r in zip(q["moduli"], q["residues"], strict=True))
        )
        assert number(ans) == x
    elif t in ("gcd", "lcm"):
        g, lcm = q["nums"][0], q["nums"][0]
        for n in q["nums"][1:]:
            g, lcm = gcd(g, n), lcm * n // gcd(lcm, n)
        assert number(ans) == (g if t == "gcd" else lcm)
    elif t in ("divisor_count", "divisor_sum", "totient"):
        n, f = q["n"], factorize(q["n"])
        count, total, phi = 1, 1, n
        for p, e in f.items():
            count *= e + 1
            total *= sum(p**i for i in range(e + 1))
            phi = phi // p * (p - 1)
        if n <= 20000:  # brute force where it is cheap
            divisors = [d for d in range(1, n + 1) if n % d == 0]
            assert (count, total, phi) == (len(divisors), sum(divisors), sum(gcd(k, n) == 1 for k in range(1, n + 1)))
        assert number(ans) == {"divisor_count": count, "divisor_sum": total, "totient": phi}[t]
    elif t == "choose":
        assert number(ans) == pascal(q["n"])[q["k"]]
    elif t == "arrangements":
        word = q["word"]
        if len(word) <= 8:
            expected = len(set(itertools.permutations(word)))
        else:
            expected = factorial(len(word))
            for c in set(word):
                expected //= factorial(word.count(c))
        assert number(ans) == expected
    elif t == "bounded_sums":
        ways = [1] + [0] * q["total"]
        for _ in range(q["parts"]):
            ways = [sum(ways[s - v] for v in range(q["cap"] + 1) if s >= v) for s in range(q["total"] + 1)]
        assert number(ans) == ways[q["total"]]
    elif t == "derangements":
        n = q["n"]
        if n <= 7:
            expected = sum(all(p[i] != i for i in range(n)) for p in itertools.permutations(range(n)))
        else:
            d = [1, 0]
            for k in range(2, n + 1):
                d.append((k - 1) * (d[-1] + d[-2]))
            expected = d[n]
        assert number(ans) == expected
    elif t == "dice_sum":
        rolls = list(itertools.product(range(1, q["sides"] + 1), repeat=q["dice"]))
        assert number(ans) == Fraction(sum(sum(r) == q["target"] for r in rolls), len(rolls))
    elif t == "urn":
        balls = ["r"] * q["red"] + ["b"] * q["blue"]
        draws = list(itertools.combinations(range(len(balls)), q["draw"]))
        hits = sum(sum(balls[i] == "r" for i in d) == q["want"] for d in draws)
        assert number(ans) == Fraction(hits, len(draws))
    elif t == "coins":
        heads = [Fraction(1)]  # distribution of the number of heads
        for _ in range(q["n"]):
            heads = [
                ((heads[k] if k < len(heads) else 0) + (heads[k - 1] if k else 0)) / 2 for k in range(len(heads) + 1)
            ]
        assert number(ans) == sum(heads[q["h"] :])
    elif t == "poly_roots":
        roots = numbers(ans)
        assert len(set(roots)) == len(roots) == len(q["coeffs"]) - 1  # all roots, no repeats
        assert all(poly_at(q["coeffs"], r) == 0 for r in roots)
    elif t == "linear_fractions":
        x = number(ans)
        assert (q["a"] * x + q["b"]) / q["c"] == (q["d"] * x - q["e"]) / q["f"]
        assert q["a"] * q["f"] != q["d"] * q["c"]  # the solution is unique
    elif t == "linear_system":
        assert ans.startswith("(") and ans.endswith(")")
        sol = numbers(ans[1:-1])
        m = q["matrix"]
        for row, r in zip(m, q["rhs"], strict=True):
            assert sum(c * v for c, v in zip(row, sol, strict=True)) == r
        if len(m) == 2:
            det = m[0][0] * m[1][1] - m[0][1] * m[1][0]
        else:
            det = sum(
                m[0][i] * (m[1][(i + 1) % 3] * m[2][(i + 2) % 3] - m[1][(i + 2) % 3] * m[2][(i + 1) % 3])
                for i in range(3)
            )
        assert det != 0
    elif t == "arithmetic_sum":
        assert number(ans) == sum(q["a"] + i * q["d"] for i in range(q["n"]))
    elif t == "geometric_sum":
        assert number(ans) == sum(q["a"] * Fraction(q["p"], q["q"]) ** i for i in range(q["n"]))
    elif t == "power_sum":
        assert number(ans) == sum(k ** q["power"] for k in range(1, q["n"] + 1))
    elif t == "recurrence":
        seq = [q["a1"], q["a2"]]
        while len(seq) < q["target"]:
            seq.append(q["c1"] * seq[-1] + q["c2"] * seq[-2])
        assert number(ans) == seq[q["target"] - 1]
    elif t == "distance":
        assert radical_squared(ans) == sum((a - b) ** 2 for a, b in zip(q["p"], q["q"], strict=True))
    elif t == "heron_area":
        assert radical_squared(ans) == Fraction(heron16(*q["sides"]), 16)
    elif t == "circumradius":
        a, b, c = q["sides"]
        assert radical_squared(ans) == Fraction((a * b * c) ** 2, heron16(a, b, c))  # R = abc / (4K)
    elif t == "inradius":
        a, b, c = q["sides"]
        assert radical_squared(ans) == Fraction(heron16(a, b, c), 4 * (a + b + c) ** 2)  # r = K / s
    else:
        raise AssertionError(f"no independent check for template {t!r}")


# ------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def problems():
    return generate_problems(540, seed=11)  # every kind/level 20 times


def test_every_answer_checks_out_independently(problems):
    for p in problems:
        try:
            check(p)
        except AssertionError as e:
            raise AssertionError(f"{p.id} ({p.metadata['template']}): {p.question} -> {p.answer}: {e}") from e


def test_every_template_is_exercised(problems):
    templates = {p.metadata["template"] for p in problems}
    assert len(templates) == 30, sorted(templates)


def test_every_kind_and_level_is_produced():
    batch = generate_problems(len(KINDS) * len(LEVELS), seed=3)
    assert {(p.metadata["kind"], p.metadata["level"]) for p in batch} == {(k, lv) for k in KINDS for lv in LEVELS}
    assert all(p.source == "generated" and p.split == "train" and p.question and p.answer for p in batch)


def test_kinds_and_levels_can_be_restricted():
    batch = generate_problems(12, seed=5, levels=(3,), kinds=("modular", "geometry"))
    assert {(p.metadata["kind"], p.metadata["level"]) for p in batch} == {("modular", 3), ("geometry", 3)}


def test_deterministic_per_seed_and_seeds_differ():
    assert generate_problems(60, seed=7) == generate_problems(60, seed=7)
    a, b = generate_problems(60, seed=7), generate_problems(60, seed=8)
    assert sum(x.question != y.question for x, y in zip(a, b, strict=True)) > 50


def test_questions_are_distinct(problems):
    assert len({p.question for p in problems}) == len(problems)
    assert len({p.id for p in problems}) == len(problems)


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="unknown problem kinds"):
        generate_problems(3, seed=0, kinds=("calculus",))
    with pytest.raises(ValueError, match="levels must be"):
        generate_problems(3, seed=0, levels=(4,))


def test_no_overlap_with_the_evaluation_sets(problems):
    assert find_overlap(problems) == []
    _, report = decontaminate(problems, Reference.build({name: load_benchmark(name) for name in EVAL_BENCHMARKS}))
    assert (report["checked"], report["removed"]) == (len(problems), 0)  # no shared text, no shared 13-word run


def test_overlap_is_detected_through_formatting_changes(problems):
    aime = load_benchmark("aime24")[0]
    leaked = Problem("leak/0", "  " + aime.question.replace("$", "").upper() + " ", aime.answer, "x", "train")
    assert find_overlap([*problems[:5], leaked]) == [("leak/0", aime.id)]


def test_gold_answers_parse_in_math_verify():
    batch = generate_problems(81, seed=21)
    with Grader(workers=2, timeout_s=20) as grader:
        results = grader.grade_batch([(p.answer, p.answer) for p in batch])
        assert all(r.correct for r in results), [p.answer for p, r in zip(batch, results, strict=True) if not r.correct]
        tuples = [p for p in batch if p.metadata["template"] == "linear_system"]
        swapped = [(p.answer, "(" + ", ".join(reversed(p.answer[1:-1].split(", "))) + ")") for p in tuples]
        swapped = [(gold, pred) for gold, pred in swapped if gold != pred]
        assert swapped and not any(r.correct for r in grader.grade_batch(swapped))  # order of a tuple matters
