"""Procedural training problems where exact computation matters.

Covered: ``generate_problems(n, seed, levels, kinds)`` returns ``Problem``
objects whose gold answers sympy computes and writes as LaTeX that math-verify
parses (integers without separators, ``\\frac{p}{q}``, ``a \\sqrt{b}``,
comma-separated root lists, ordered tuples). Kinds (``KINDS``):

- ``arithmetic``: big products and powers, sums of unit fractions, digit sums of factorials;
- ``modular``: modular powers, modular inverses, the Chinese remainder theorem;
- ``number_theory``: gcd / lcm, divisor counts and sums, Euler's totient;
- ``counting``: binomials, word arrangements, bounded compositions, derangements;
- ``probability``: dice sums, urn draws, coin flips (exact fractions);
- ``equations``: polynomials with integer/rational roots, linear equations with fractions;
- ``systems``: 2x2 and 3x3 linear systems with rational solutions;
- ``sequences``: arithmetic and geometric sums, power sums, linear recurrences;
- ``geometry``: distances, triangle areas (Heron), circumradii and inradii with exact radicals.

Levels 1-3 scale the sizes (digits, degrees, number of terms). The output is
deterministic per seed: problem ``i`` has kind/level ``combos[i % len(combos)]``
and its numbers come from one ``random.Random(seed)``, so every requested kind
and level appears once ``n >= len(kinds) * len(levels)``. Each problem's
``metadata`` holds ``kind``, ``level``, ``template`` and the ``params`` the
question was built from, so answers can be re-derived independently.

Keeping them apart from evaluation questions is ``thor_core.data.heldout``'s job.

Not covered: word problems in natural settings, proofs, answers that are
expressions in variables, or difficulty calibrated against a model.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sympy as sp

from thor_core.data.benchmarks import Problem

LEVELS = (1, 2, 3)

Made = tuple[str, Any, str, dict]  # question, sympy answer (or ready LaTeX str), template, params


def _tex(value: Any) -> str:
    """Gold LaTeX for a sympy value (a str is already LaTeX)."""
    return value if isinstance(value, str) else sp.latex(value)


def _roots_tex(values: Iterable[sp.Rational]) -> str:
    return ", ".join(_tex(v) for v in sorted(values))


def _tuple_tex(values: Iterable[sp.Rational]) -> str:
    return "(" + ", ".join(_tex(v) for v in values) + ")"


def _poly_tex(coeffs: Sequence[int], var: str = "x") -> str:
    """LaTeX of sum coeffs[i] * var^(deg-i), e.g. [1, -3, 2] -> x^{2} - 3 x + 2."""
    return sp.latex(sp.Poly(coeffs, sp.Symbol(var)).as_expr())


# ---------------------------------------------------------------- templates
# Each takes (rng, level) and returns (question, answer, template name, params).


def _arithmetic(rng: random.Random, level: int) -> Made:
    t = rng.choice(("product", "power", "unit_fractions", "factorial_digit_sum"))
    if t == "product":
        digits = {1: 6, 2: 12, 3: 20}[level]
        a, b = rng.randrange(10 ** (digits - 1), 10**digits), rng.randrange(10 ** (digits - 1), 10**digits)
        return f"Compute the exact value of ${a} \\times {b}$.", sp.Integer(a) * sp.Integer(b), t, {"a": a, "b": b}
    if t == "power":
        base, exp = (
            rng.randint(3, {1: 9, 2: 19, 3: 99}[level]),
            rng.randint({1: 8, 2: 15, 3: 25}[level], {1: 14, 2: 30, 3: 45}[level]),
        )
        return f"Compute the exact value of ${base}^{{{exp}}}$.", sp.Integer(base) ** exp, t, {"base": base, "exp": exp}
    if t == "unit_fractions":
        count = {1: 3, 2: 4, 3: 6}[level]
        dens = sorted(rng.sample(range(2, {1: 20, 2: 60, 3: 200}[level]), count))
        terms = " + ".join(f"\\frac{{1}}{{{d}}}" for d in dens)
        value = sum((sp.Rational(1, d) for d in dens), sp.Integer(0))
        return f"Write ${terms}$ as a fraction in lowest terms.", value, t, {"dens": dens}
    n = rng.randint({1: 10, 2: 25, 3: 60}[level], {1: 20, 2: 50, 3: 120}[level])
    value = sum(int(c) for c in str(sp.factorial(n)))
    return f"What is the sum of the decimal digits of ${n}!$?", sp.Integer(value), t, {"n": n}


def _modular(rng: random.Random, level: int) -> Made:
    t = rng.choice(("modpow", "inverse", "crt"))
    if t == "modpow":
        a = rng.randint(2, 10**level * 5)
        e = rng.randint(10 ** (2 * level), 10 ** (4 * level))
        m = rng.randint(10 ** (level + 1), 10 ** (level + 2))
        return (
            f"What is the remainder when ${a}^{{{e}}}$ is divided by ${m}$?",
            pow(sp.Integer(a), e, m),
            t,
            {"a": a, "e": e, "m": m},
        )
    if t == "inverse":
        m = int(sp.prevprime(rng.randint(10 ** (level + 1), 10 ** (level + 2))))
        a = rng.randint(2, m - 1)
        return (
            f"Find the integer $x$ with $0 \\le x < {m}$ such that ${a}x \\equiv 1 \\pmod{{{m}}}$.",
            sp.mod_inverse(a, m),
            t,
            {"a": a, "m": m},
        )
    from sympy.ntheory.modular import crt

    count = level + 1
    pool = [p for p in range(3, {1: 20, 2: 30, 3: 40}[level]) if sp.isprime(p)]
    moduli = sorted(rng.sample(pool, count))
    residues = [rng.randrange(m) for m in moduli]
    lines = ", ".join(f"$x \\equiv {r} \\pmod{{{m}}}$" for r, m in zip(residues, moduli, strict=True))
    value, _ = crt(moduli, residues)
    return (
        f"Find the smallest non-negative integer $x$ such that {lines}.",
        sp.Integer(value),
        t,
        {"moduli": moduli, "residues": residues},
    )


def _number_theory(rng: random.Random, level: int) -> Made:
    t = rng.choice(("gcd", "lcm", "divisor_count", "divisor_sum", "totient"))
    if t in ("gcd", "lcm"):
        count = 2 if level < 3 else 3
        common = rng.randint(2, 10 ** (level + 1))
        nums = [common * rng.randint(2, 10 ** (level + 1)) for _ in range(count)]
        listed = ", ".join(f"${x}$" for x in nums[:-1]) + f" and ${nums[-1]}$"
        if t == "gcd":
            return f"Find the greatest common divisor of {listed}.", sp.gcd(nums), t, {"nums": nums}
        return f"Find the least common multiple of {listed}.", sp.ilcm(*nums), t, {"nums": nums}
    primes = [p for p in range(2, 60) if sp.isprime(p)]
    factors = rng.sample(primes[: 6 + 2 * level], level + 1)
    n = 1
    for p in factors:
        n *= p ** rng.randint(1, 4 - (p > 10) - (p > 30))
    if t == "divisor_count":
        return f"How many positive divisors does ${n}$ have?", sp.divisor_count(n), t, {"n": n}
    if t == "divisor_sum":
        return f"What is the sum of all positive divisors of ${n}$?", sp.divisor_sigma(n), t, {"n": n}
    return (
        f"How many integers $k$ with $1 \\le k \\le {n}$ satisfy $\\gcd(k, {n}) = 1$?",
        sp.totient(n),
        t,
        {"n": n},
    )


def _counting(rng: random.Random, level: int) -> Made:
    t = rng.choice(("choose", "arrangements", "bounded_sums", "derangements"))
    if t == "choose":
        n = rng.randint({1: 8, 2: 30, 3: 80}[level], {1: 20, 2: 60, 3: 200}[level])
        k = rng.randint(2, n // 2)
        return (
            f"In how many ways can a committee of ${k}$ people be chosen from ${n}$ people?",
            sp.binomial(n, k),
            t,
            {"n": n, "k": k},
        )
    if t == "arrangements":
        letters = "ABCDEFGH"[: 2 + level]
        counts = [rng.randint(1, 1 + level) for _ in letters]
        word = "".join(c * k for c, k in zip(letters, counts, strict=True))
        word = "".join(rng.sample(word, len(word)))
        value = sp.factorial(len(word)) / sp.prod([sp.factorial(word.count(c)) for c in letters])
        return (
            f"How many distinct strings can be formed by rearranging all the letters of {word}?",
            value,
            t,
            {"word": word},
        )
    if t == "bounded_sums":
        parts, cap = level + 2, rng.randint(3, 4 + 2 * level)
        total = rng.randint(cap, parts * cap - 1)
        x = sp.Symbol("x")
        value = sp.Poly(sum(x**i for i in range(cap + 1)) ** parts, x).coeff_monomial(x**total)
        return (
            f"How many ordered ${parts}$-tuples of integers $(x_1, \\ldots, x_{{{parts}}})$ with "
            f"$0 \\le x_i \\le {cap}$ satisfy $x_1 + \\cdots + x_{{{parts}}} = {total}$?",
            value,
            t,
            {"parts": parts, "cap": cap, "total": total},
        )
    n = rng.randint({1: 4, 2: 8, 3: 14}[level], {1: 7, 2: 13, 3: 25}[level])
    return (
        f"How many permutations of $1, 2, \\ldots, {n}$ leave no number in its original position?",
        sp.subfactorial(n),
        t,
        {"n": n},
    )


def _probability(rng: random.Random, level: int) -> Made:
    t = rng.choice(("dice_sum", "urn", "coins"))
    if t == "dice_sum":
        dice, sides = level + 1, rng.choice((4, 6, 8) if level < 3 else (6, 8, 10))
        target = rng.randint(dice + 1, dice * sides - 1)
        x = sp.Symbol("x")
        ways = sp.Poly(sum(x**i for i in range(1, sides + 1)) ** dice, x).coeff_monomial(x**target)
        return (
            f"${dice}$ fair ${sides}$-sided dice, with faces numbered $1$ to ${sides}$, are rolled. "
            f"What is the probability that the numbers shown add up to ${target}$? Give an exact fraction.",
            sp.Rational(ways, sides**dice),
            t,
            {"dice": dice, "sides": sides, "target": target},
        )
    if t == "urn":
        red, blue = rng.randint(2, 3 + 2 * level), rng.randint(2, 3 + 2 * level)
        draw = rng.randint(2, min(red + blue - 1, 2 + level))
        want = rng.randint(max(0, draw - blue), min(red, draw))
        value = sp.binomial(red, want) * sp.binomial(blue, draw - want) / sp.binomial(red + blue, draw)
        return (
            f"An urn holds ${red}$ red and ${blue}$ blue balls. ${draw}$ balls are drawn at random without "
            f"replacement. What is the probability that exactly ${want}$ of them are red?",
            value,
            t,
            {"red": red, "blue": blue, "draw": draw, "want": want},
        )
    n = rng.randint(4 * level, 6 * level)
    h = rng.randint(n // 2, n - 1)
    value = sum((sp.binomial(n, k) for k in range(h, n + 1)), sp.Integer(0)) / sp.Integer(2) ** n
    return (
        f"A fair coin is flipped ${n}$ times. What is the probability of getting at least ${h}$ heads?",
        value,
        t,
        {"n": n, "h": h},
    )


def _equations(rng: random.Random, level: int) -> Made:
    t = rng.choice(("poly_roots", "linear_fractions"))
    x = sp.Symbol("x")
    if t == "poly_roots":
        degree = level + 1
        span = 3 * level + 3
        if level < 3:
            roots = [sp.Integer(r) for r in rng.sample(range(-span, span + 1), degree)]
        else:
            denom = rng.choice((2, 3))
            roots = [sp.Rational(rng.choice([v for v in range(-2 * span, 2 * span) if v % denom]), denom)]
            roots += [sp.Integer(r) for r in rng.sample(range(-span, span + 1), degree - 1)]
        poly = sp.Poly(sp.prod([sp.denom(r) * x - sp.numer(r) for r in roots]), x)
        coeffs = [int(c) for c in poly.all_coeffs()]
        solved = sp.solve(poly.as_expr(), x)
        return (
            f"Find all real solutions of ${_poly_tex(coeffs)} = 0$. List them separated by commas.",
            _roots_tex(solved),
            t,
            {"coeffs": coeffs},
        )
    a, c = rng.randint(2, 5 * level + 4), rng.randint(2, 5 * level + 4)
    b, d = rng.randint(1, 10 * level), rng.randint(2, 5 * level + 4)
    e, f = rng.randint(1, 10 * level), rng.randint(2, 5 * level + 4)
    if a * f == d * c:  # no unique solution: shift one coefficient
        d += 1
    lhs, rhs = (a * x + b) / c, (d * x - e) / f
    (value,) = sp.solve(sp.Eq(lhs, rhs), x)
    return (
        f"Solve for $x$: $\\frac{{{a}x + {b}}}{{{c}}} = \\frac{{{d}x - {e}}}{{{f}}}$.",
        value,
        t,
        {"a": a, "b": b, "c": c, "d": d, "e": e, "f": f},
    )


def _systems(rng: random.Random, level: int) -> Made:
    size = 2 if level == 1 else 3
    names = sp.symbols("x y z")[:size]
    bound = 3 + 3 * level
    while True:
        matrix = [[rng.randint(-bound, bound) for _ in range(size)] for _ in range(size)]
        if sp.Matrix(matrix).det() != 0:
            break
    rhs = [rng.randint(-4 * bound, 4 * bound) for _ in range(size)]
    equations = [
        sp.Eq(sum(c * v for c, v in zip(row, names, strict=True)), r) for row, r in zip(matrix, rhs, strict=True)
    ]
    (solution,) = sp.linsolve(equations, *names)
    text = ", ".join(f"${sp.latex(eq.lhs)} = {eq.rhs}$" for eq in equations)
    ordered = "(" + ", ".join(str(v) for v in names) + ")"
    return (
        f"Solve the system {text}. Give the answer as the ordered {'pair' if size == 2 else 'triple'} ${ordered}$.",
        _tuple_tex(solution),
        "linear_system",
        {"matrix": matrix, "rhs": rhs},
    )


def _sequences(rng: random.Random, level: int) -> Made:
    t = rng.choice(("arithmetic_sum", "geometric_sum", "power_sum", "recurrence"))
    k = sp.Symbol("k", integer=True)
    if t == "arithmetic_sum":
        a, d, n = rng.randint(-50, 50), rng.randint(2, 10 * level), rng.randint(10 * level, 100 * level)
        value = sp.summation(a + (k - 1) * d, (k, 1, n))
        return (
            f"An arithmetic sequence has first term ${a}$ and common difference ${d}$. Find the sum of its first ${n}$ terms.",
            value,
            t,
            {"a": a, "d": d, "n": n},
        )
    if t == "geometric_sum":
        p, q = rng.randint(1, 4 + level), rng.randint(2, 5 + level)
        if p == q:
            p += 1
        a, n = rng.randint(1, 9), rng.randint(4 + 2 * level, 6 + 4 * level)
        value = sp.summation(a * sp.Rational(p, q) ** (k - 1), (k, 1, n))
        return (
            f"A geometric sequence has first term ${a}$ and common ratio $\\frac{{{p}}}{{{q}}}$. "
            f"Find the exact sum of its first ${n}$ terms.",
            value,
            t,
            {"a": a, "p": p, "q": q, "n": n},
        )
    if t == "power_sum":
        power, n = rng.randint(2, 2 + level), rng.randint(20 * level, 200 * level)
        return (
            f"Compute $\\sum_{{k=1}}^{{{n}}} k^{{{power}}}$.",
            sp.summation(k**power, (k, 1, n)),
            t,
            {"power": power, "n": n},
        )
    c1, c2 = rng.randint(1, 2 + level), rng.randint(-2, 2 + level) or 1
    a1, a2 = rng.randint(-3, 5), rng.randint(-3, 5)
    target = rng.randint(10 * level, 25 * level)
    step = sp.Matrix([[c1, c2], [1, 0]]) ** (target - 2) * sp.Matrix([a2, a1])
    return (
        f"A sequence has $a_1 = {a1}$, $a_2 = {a2}$ and $a_n = {c1}a_{{n-1}} {'+' if c2 > 0 else '-'} {abs(c2)}a_{{n-2}}$ "
        f"for $n \\ge 3$. Find $a_{{{target}}}$.",
        step[0],
        t,
        {"c1": c1, "c2": c2, "a1": a1, "a2": a2, "target": target},
    )


def _triangle(rng: random.Random, level: int) -> tuple[int, int, int]:
    while True:
        sides = sorted(rng.randint(2, 6 + 6 * level) for _ in range(3))
        if sides[0] + sides[1] > sides[2] and len(set(sides)) > 1:
            return tuple(sides)


def _geometry(rng: random.Random, level: int) -> Made:
    t = rng.choice(("distance", "heron_area", "circumradius", "inradius"))
    if t == "distance":
        dims = 2 if level == 1 else 3
        p = [rng.randint(-5 * level, 5 * level) for _ in range(dims)]
        q = [rng.randint(-5 * level, 5 * level) for _ in range(dims)]
        if p == q:
            q[0] += 1
        value = sp.sqrt(sum((a - b) ** 2 for a, b in zip(p, q, strict=True)))
        return (
            f"Find the exact distance between the points ${_tuple_tex(p)}$ and ${_tuple_tex(q)}$.",
            value,
            t,
            {"p": p, "q": q},
        )
    a, b, c = _triangle(rng, level)
    s = sp.Rational(a + b + c, 2)
    area = sp.sqrt(s * (s - a) * (s - b) * (s - c))
    sides = f"${a}$, ${b}$ and ${c}$"
    if t == "heron_area":
        return f"A triangle has side lengths {sides}. Find its exact area.", area, t, {"sides": [a, b, c]}
    if t == "circumradius":
        value = sp.radsimp(sp.Integer(a * b * c) / (4 * area))
        return (
            f"A triangle has side lengths {sides}. Find the exact radius of its circumscribed circle.",
            value,
            t,
            {"sides": [a, b, c]},
        )
    return (
        f"A triangle has side lengths {sides}. Find the exact radius of its inscribed circle.",
        sp.radsimp(area / s),
        t,
        {"sides": [a, b, c]},
    )


GENERATORS: dict[str, Callable[[random.Random, int], Made]] = {
    "arithmetic": _arithmetic,
    "modular": _modular,
    "number_theory": _number_theory,
    "counting": _counting,
    "probability": _probability,
    "equations": _equations,
    "systems": _systems,
    "sequences": _sequences,
    "geometry": _geometry,
}
KINDS = tuple(GENERATORS)


def generate_problems(
    n: int, seed: int, levels: Sequence[int] = LEVELS, kinds: Sequence[str] | None = None
) -> list[Problem]:
    """``n`` distinct problems, the same for the same arguments."""
    kinds = tuple(kinds) if kinds is not None else KINDS
    unknown = [k for k in kinds if k not in GENERATORS]
    if unknown or not kinds:
        raise ValueError(f"unknown problem kinds {unknown or '(none given)'}; choose from {KINDS}")
    bad_levels = [lv for lv in levels if lv not in LEVELS]
    if bad_levels or not levels:
        raise ValueError(f"levels must be a non-empty subset of {LEVELS}, got {tuple(levels)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    combos = [(k, lv) for k in kinds for lv in levels]
    rng = random.Random(seed)
    seen: set[str] = set()
    problems = []
    for i in range(n):
        kind, level = combos[i % len(combos)]
        for _ in range(100):
            question, value, template, params = GENERATORS[kind](rng, level)
            if question not in seen:
                break
        else:
            raise RuntimeError(
                f"could not draw a new {kind} level-{level} problem after 100 tries; "
                "ask for fewer problems or more kinds/levels"
            )
        seen.add(question)
        problems.append(
            Problem(
                id=f"gen/{seed}/{i}",
                question=question,
                answer=_tex(value),
                source="generated",
                split="train",
                metadata={"kind": kind, "level": level, "template": template, "params": params, "seed": seed},
            )
        )
    return problems
