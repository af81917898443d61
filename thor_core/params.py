"""Parameter schemas and files: every stage's settings, checked before anything runs.

Covered:

- **Schemas.** Each stage declares a dataclass of its parameters (defaults
  plus ``metadata={"help": ...}``). :func:`validate_params` checks a mapping
  against it: unknown keys (with a did-you-mean), types, ``Literal`` choices,
  and reports every bad field in one :class:`ParamsError`. Supported field
  types: ``str``, ``int``, ``float`` (ints accepted and converted), ``bool``
  (only real booleans: not ``1``, not ``"true"``), ``list[X]``,
  ``Optional[X]`` / ``X | None``, ``Literal[...]`` and ``Any`` (unchecked).
  Anything else (dicts, tuples, nested dataclasses, paths) is rejected when
  the schema is used, so a schema never silently skips a check. Defaults are
  trusted, not checked.
- **Files.** YAML under ``params/<profile>/<notebook>.yaml``
  (:func:`load_profile`, :func:`profile_path`, :func:`load_params_file`), and
  :func:`params_from_namespace` for a notebook's own ``globals()``.

Not covered: cross-field rules (each schema's ``__post_init__`` checks its own).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from thor_core.files import REPO_ROOT

PARAMS = REPO_ROOT / "params"


#: keys that moved to another stage's parameters: the hint an old profile's error gives instead of a near match
MOVED = {
    "mask_tool_outputs": "moved to SFT (params/<profile>/02_sft.yaml): TIRGen's export keeps every label and marks "
    "the output blocks, SFT decides whether they train",
}


def help_field(default: Any, help: str) -> Any:
    """A dataclass field with its help text (``metadata["help"]``, shown by the parameter errors and the CLIs); a
    callable default is a factory (lists, dicts)."""
    if callable(default):
        return dataclasses.field(default_factory=default, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def unknown_hint(key: str, known) -> str:
    """Why ``key`` is not a parameter here: where it moved, the nearest known name, or the known names."""
    if key in MOVED:
        return MOVED[key]
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known)


class ParamsError(ValueError):
    """Bad parameters; ``problems`` holds one line per bad field."""

    def __init__(self, schema_name: str, problems: list[str], source: str | None = None):
        self.problems = problems
        where = f" (from {source})" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} invalid parameter(s) for {schema_name}{where}:\n{lines}")


class _Mismatch(Exception):
    """Raised inside :func:`_convert`; carries an optional hint for the user."""

    def __init__(self, hint: str = ""):
        self.hint = hint


def _union_args(tp: Any) -> tuple | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _describe(tp: Any) -> str:
    """Human-readable name of a supported type; TypeError for unsupported ones."""
    if tp is Any:
        return "any value"
    if tp in (str, int, float):
        return tp.__name__
    if tp is bool:
        return "bool (true/false)"
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return f"list of {_describe(item)}"
    if (args := _union_args(tp)) is not None:
        return " or ".join(_describe(a) for a in args)
    raise TypeError(
        f"unsupported parameter type {tp!r}; use str, int, float, bool, list[...], Optional[...] or Literal[...]"
    )


def _number_string_hint(value: Any) -> str:
    """A hint when a number arrived as a string (quoted, or PyYAML's ``1e-5``)."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        if "e" in value.lower() and "." not in value:
            return "a string: PyYAML reads 1e-5 as text, write 1.0e-5"
        return "a string, not a number: drop the quotes"
    return ""


def _convert(value: Any, tp: Any) -> Any:
    """``value`` checked against ``tp`` (ints become floats for float fields)."""
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch()
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "on", "off"):
            raise _Mismatch("a string, not a boolean: write true/false without quotes")
        raise _Mismatch()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch(_number_string_hint(value))
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch(_number_string_hint(value))
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            raise _Mismatch("YAML reads yes/no/on/off/true/false as booleans: quote it")
        raise _Mismatch()
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        close = difflib.get_close_matches(value, [str(c) for c in choices], n=1) if isinstance(value, str) else []
        raise _Mismatch(f"did you mean {close[0]!r}?" if close else "")
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise _Mismatch()
        (item_tp,) = typing.get_args(tp)
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_convert(item, item_tp))
            except _Mismatch as e:
                hint = f"item {i} is {item!r} ({type(item).__name__})" + (f"; {e.hint}" if e.hint else "")
                raise _Mismatch(hint) from None
        return out
    if (args := _union_args(tp)) is not None:
        hints = []
        for arg in args:
            try:
                return _convert(value, arg)
            except _Mismatch as e:
                hints.append(e.hint)
        raise _Mismatch("; ".join(h for h in hints if h))
    raise TypeError(f"unsupported parameter type {tp!r}")


def _schema_fields(schema_cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """Field name -> (field, resolved type); checks every type is supported."""
    if not (isinstance(schema_cls, type) and dataclasses.is_dataclass(schema_cls)):
        raise TypeError(f"a parameter schema must be a dataclass class, got {schema_cls!r}")
    hints = typing.get_type_hints(schema_cls)
    fields = {}
    for f in dataclasses.fields(schema_cls):
        if not f.init:
            continue
        try:
            _describe(hints[f.name])
        except TypeError as e:
            raise TypeError(f"{schema_cls.__name__}.{f.name}: {e}") from None
        fields[f.name] = (f, hints[f.name])
    return fields


def validate_params(schema_cls: type, values: Mapping[str, Any], source: str | None = None):
    """An instance of ``schema_cls`` built from ``values``, or :class:`ParamsError`.

    Missing keys take the schema's defaults. ``source`` (a file name, say) is
    only used in the error message.
    """
    fields = _schema_fields(schema_cls)
    problems, kwargs = [], {}
    for key, value in values.items():
        if key not in fields:
            problems.append(f"{key}: unknown parameter ({unknown_hint(key, fields)})")
            continue
        tp = fields[key][1]
        try:
            kwargs[key] = _convert(value, tp)
        except _Mismatch as e:
            hint = f" ({e.hint})" if e.hint else ""
            problems.append(f"{key}: got {value!r} ({type(value).__name__}); expected {_describe(tp)}{hint}")
    for name, (f, tp) in fields.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and name not in values:
            problems.append(f"{name}: missing (required, expected {_describe(tp)})")
    if problems:
        raise ParamsError(schema_cls.__name__, problems, source)
    return schema_cls(**kwargs)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError("parameter file", [f"not valid YAML: {e}"], str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(
            "parameter file", [f"top level must be a mapping of name: value, got {type(data).__name__}"], str(path)
        )
    return data


def load_params_file(schema_cls: type, path: str | os.PathLike):
    """Validate the YAML mapping in ``path`` against ``schema_cls``."""
    return validate_params(schema_cls, read_yaml_mapping(Path(path)), source=str(path))


def profile_path(profile: str, notebook: str | os.PathLike, params_root: str | os.PathLike | None = None) -> Path:
    """``params/<profile>/<notebook stem>.yaml``; FileNotFoundError listing what exists."""
    root = Path(params_root) if params_root is not None else PARAMS
    profiles = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if profile not in profiles:
        raise FileNotFoundError(
            f"no parameter profile {profile!r} in {root}; available: {', '.join(profiles) or 'none'}"
        )
    path = root / profile / f"{Path(notebook).stem}.yaml"
    if not path.is_file():
        files = sorted(p.stem for p in (root / profile).glob("*.yaml"))
        raise FileNotFoundError(
            f"profile {profile!r} has no {path.name} in {root / profile}; it has: {', '.join(files) or 'nothing'}"
        )
    return path


def load_profile(
    schema_cls: type, profile: str, notebook: str | os.PathLike, params_root: str | os.PathLike | None = None
):
    """Validated parameters from ``params/<profile>/<notebook>.yaml`` (``notebook``
    may be a name, a file name or a path: its stem is used)."""
    return load_params_file(schema_cls, profile_path(profile, notebook, params_root))


def split_params(schemas: Sequence[type], values: Mapping[str, Any], source: str | None = None) -> tuple:
    """One flat mapping (a notebook's profile) as one validated instance per schema, in order.

    A notebook composes its stage's parameters with small dataclasses of its own (the check it runs, its display
    keys), as TRL's and open-r1's parsers compose script and trainer arguments: each key goes to every schema that
    declares it; a key none declares is an error naming the nearest known key.
    """
    fields = [_schema_fields(s) for s in schemas]
    declared = sorted({name for f in fields for name in f})
    problems, out = [], []
    for key in (k for k in values if k not in declared):
        problems.append(f"{key}: unknown parameter ({unknown_hint(key, declared)})")
    for schema, names in zip(schemas, fields):  # every bad value is named too, not only the first schema's
        try:
            out.append(validate_params(schema, {k: v for k, v in values.items() if k in names}))
        except ParamsError as e:
            problems += e.problems
    if problems:
        raise ParamsError(" + ".join(s.__name__ for s in schemas), problems, source)
    return tuple(out)


def params_from_namespace(schemas: type | Sequence[type], namespace: Mapping[str, Any]):
    """Validated parameters picked from a notebook's ``globals()``: an instance, or a tuple for several schemas.

    Use right after the ``parameters`` cell: ``p = params_from_namespace(MyParams, globals())``, or
    ``train, check, nb = params_from_namespace((SFTParams, CheckParams, SFTNotebook), globals())``.
    Fields the namespace lacks take the schemas' defaults; other names in the namespace are ignored (unknown names
    are caught earlier, by ``thor_core.runs.notebooks.run_notebook``, against the notebook's parameters cell).
    """
    many = isinstance(schemas, Sequence)
    group = tuple(schemas) if many else (schemas,)
    declared = {name for s in group for name in _schema_fields(s)}
    out = split_params(group, {k: namespace[k] for k in declared if k in namespace}, source="notebook namespace")
    return out if many else out[0]
