"""The package's shape, enforced: the import-linter contracts in pyproject.toml (layers, no cycles), no private name
crossing a module boundary, function-level imports of the kit's own modules only where they are said to be needed,
and no stage-prefixed module at the top level (docs/DESIGN.md, "Layout")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from thor_core.files import REPO_ROOT

PACKAGE = REPO_ROOT / "thor_core"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_import_contracts_hold():
    """``lint-imports`` (what ``make lint`` runs): the layers of pyproject.toml and no import cycle in any package."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_module_uses_another_modules_private_names():
    crossings = []
    for path in MODULES:
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> kit module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("thor_core"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        crossings.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {node.module}.{a.name}")
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("thor_core"):
                        aliases[a.asname or a.name.split(".")[0]] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                crossings.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not crossings, "private names used across modules:\n" + "\n".join(crossings)


def test_function_level_imports_of_the_kit_say_why():
    """A function-level import of a kit module hides the import graph; allowed where a comment on it, or on the line
    above, says why (a heavy or optional dependency behind it)."""
    hidden = []
    for path in MODULES:
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("thor_core"):
                    here, above = lines[inner.lineno - 1], lines[inner.lineno - 2]
                    if "#" not in here and not above.strip().startswith("#"):
                        hidden.append(f"{path.relative_to(REPO_ROOT)}:{inner.lineno}: {here.strip()}")
    assert not hidden, "function-level imports without a reason:\n" + "\n".join(hidden)


def test_stages_are_packages_not_name_prefixes():
    top = [p.stem for p in PACKAGE.glob("*.py")]
    prefixed = [m for m in top if m.startswith(("tirgen", "sft", "eval", "rl_", "rung", "ladder", "actor", "critic"))]
    assert not prefixed, f"stage modules at the top level: {prefixed}"
    for stage in ("tirgen", "sft", "rl", "evaluation", "runs"):
        assert (PACKAGE / stage / "__main__.py").is_file(), f"python -m thor_core.{stage} needs {stage}/__main__.py"
    assert {_module_name(p) for p in MODULES} >= {"thor_core.data.heldout", "thor_core.engine.correction"}
