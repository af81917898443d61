"""The docs point at code that exists, and the code points at docs that exist.

- Every ``thor_core/<path>.py:name`` in docs/METHOD.md and docs/DESIGN.md (also ``:Class.method``, and a bare
  ``thor_core/<path>.py``) names a file of the repository and a definition in it: a top-level function, class or
  module-level assignment; for ``Class.method`` (or ``Class.field``) a definition in that class's body.
- No comment or string (docstrings included) under thor_core/ names a Markdown file the repository does not hold.
  A name resolves when it is a path from the repo root, or a file of docs/, of the top level or of params/; names
  the code itself writes into run folders (a string constant that is exactly the name, like ``"REPORT.md"``) are
  outputs, not docs. The project notes THOR_METHOD.md, ENVIRONMENT.md and ARCHITECTURE.md live outside the
  repository: nothing in it may point there.

No model, no network, no import of thor_core: files are read and parsed with ``ast`` and ``tokenize``.
"""

from __future__ import annotations

import ast
import difflib
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED_DOCS = ("docs/METHOD.md", "docs/DESIGN.md")
OUTSIDE_DOCS = ("THOR_METHOD.md", "ENVIRONMENT.md", "ARCHITECTURE.md")
WHERE_INSTEAD = (
    "docs/METHOD.md (the paper's method), docs/DESIGN.md (design choices), README.md or docs/TESTING.md "
    "(the environment), docs/sandbox.md (the sandbox), docs/BENCHMARKS.md (measurements)"
)

# thor_core/a/b.py, optionally followed by :name or :Class.name
CODE_REF = re.compile(r"(thor_core/[\w/]+\.py)(?::([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*))?")
# a Markdown file name, possibly with a folder in front (at least one name character before ".md")
MD_NAME = re.compile(r"[\w./-]*[\w-]\.md\b")


# ------------------------------------------------------------------ docs -> code


def _definitions(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names a module or class body defines: functions, classes, assignments (annotated or not)."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names[leaf.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return names


def resolve(path: str, name: str | None) -> str | None:
    """None when ``path`` (and ``name`` in it) exists; else what is missing."""
    file = ROOT / path
    if not file.is_file():
        return f"no file {path}"
    if name is None:
        return None
    scope = _definitions(ast.parse(file.read_text(encoding="utf-8"), filename=path).body)
    parts = name.split(".")
    for depth, part in enumerate(parts):
        if part not in scope:
            where = "top level" if depth == 0 else f"class {'.'.join(parts[:depth])}"
            close = difflib.get_close_matches(part, list(scope), n=3)
            hint = f" (close: {', '.join(close)})" if close else ""
            return f"{path} has no definition {part!r} at its {where}{hint}"
        node = scope[part]
        if depth < len(parts) - 1:
            if not isinstance(node, ast.ClassDef):
                return f"{path}: {'.'.join(parts[: depth + 1])} is not a class, so it has no {parts[depth + 1]!r}"
            scope = _definitions(node.body)
    return None


def code_references(doc: str) -> list[tuple[int, str, str | None]]:
    """(line number, path, name or None) of every code reference in ``doc``."""
    refs = []
    for number, line in enumerate((ROOT / doc).read_text(encoding="utf-8").splitlines(), start=1):
        refs += [(number, m.group(1), m.group(2)) for m in CODE_REF.finditer(line)]
    return refs


@pytest.mark.parametrize("doc", MAPPED_DOCS)
def test_code_references_in_docs_resolve(doc):
    if not (ROOT / doc).is_file():
        pytest.fail(f"{doc} is missing")
    problems = []
    for number, path, name in code_references(doc):
        if why := resolve(path, name):
            problems.append(f"  {doc}:{number}: {path}{':' + name if name else ''}: {why}")
    assert not problems, (
        f"{len(problems)} code reference(s) in {doc} do not resolve (rename them, or define what they name):\n"
        + "\n".join(problems)
    )


def test_method_doc_maps_every_stage():
    """METHOD.md is the paper mapped onto the code: at least one reference into each stage's package."""
    paths = {path for _, path, _ in code_references("docs/METHOD.md")}
    for package in ("engine", "tirgen", "sft", "rl", "evaluation", "data"):
        assert any(p.startswith(f"thor_core/{package}/") for p in paths), (
            f"docs/METHOD.md names nothing under thor_core/{package}/"
        )


# ------------------------------------------------------------------ code -> docs


def _texts(source: str, filename: str) -> tuple[list[tuple[int, str]], set[str]]:
    """(line, text) of every comment and string constant in a Python file, and the strings that are whole names.

    The second set holds string constants outside docstrings that are exactly a Markdown file name: files the
    code writes (``base / "REPORT.md"``), not documents it refers to.
    """
    tree = ast.parse(source, filename=filename)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    texts, written = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append((node.lineno, node.value))
            if id(node) not in docstrings and re.fullmatch(r"[\w.-]+\.md", node.value):
                written.add(node.value)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            texts.append((token.start[0], token.string))
    return texts, written


def _doc_exists(name: str) -> bool:
    if "/" in name and (ROOT / name.lstrip("/")).is_file():
        return True
    base = name.rsplit("/", 1)[-1]
    return any((ROOT / folder / base).is_file() for folder in ("docs", ".", "params"))


def test_code_names_only_docs_in_the_repository():
    mentions, written = [], set()
    for file in sorted((ROOT / "thor_core").rglob("*.py")):
        rel = file.relative_to(ROOT).as_posix()
        texts, outputs = _texts(file.read_text(encoding="utf-8"), rel)
        written |= outputs
        mentions += [
            (rel, line + text.count("\n", 0, m.start()), m.group(0))
            for line, text in texts
            for m in MD_NAME.finditer(text)
        ]
    problems = []
    for rel, line, name in sorted(set(mentions)):
        base = name.rsplit("/", 1)[-1]
        if base in OUTSIDE_DOCS:
            problems.append(f"  {rel}:{line}: {name} is not in this repository")
        elif base not in written and not _doc_exists(name):
            problems.append(f"  {rel}:{line}: {name}: no such file in docs/, the top level or params/")
    assert not problems, (
        f"{len(problems)} mention(s) under thor_core/ of docs the repository does not hold "
        f"(point to {WHERE_INSTEAD}):\n" + "\n".join(problems)
    )


def test_nothing_in_the_repository_points_to_the_outside_notes():
    """The same rule for the out-of-repository notes, over every hand-written text file of the kit."""
    roots = ["thor_core", "tests", "benchmarks", "docs", "params", "notebooks", "requirements", ".ci"]
    files = [ROOT / name for name in ("README.md", "Makefile", "pyproject.toml", "environment.yml")]
    for root in roots:
        files += [p for p in (ROOT / root).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    this = Path(__file__).resolve()
    problems = []
    for file in files:
        if file.resolve() == this or not file.is_file() or file.suffix in (".png", ".pdf", ".gguf", ".pyc"):
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            problems += [f"  {file.relative_to(ROOT)}:{number}: {name}" for name in OUTSIDE_DOCS if name in line]
    assert not problems, (
        f"{len(problems)} pointer(s) to notes that are not in the repository; point to {WHERE_INSTEAD}:\n"
        + "\n".join(problems)
    )
