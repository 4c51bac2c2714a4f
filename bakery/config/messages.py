"""pydantic's ValidationError as ``file:line: field: message`` lines a new user can act on."""

from __future__ import annotations

import datetime
import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from bakery.config.source import Loc, Source
from bakery.errors import FieldError

# pydantic names the branch of a union (str | int) in the location: not a key of the file.
_UNION_BRANCHES = {"str", "int", "float", "bool", "list", "dict", "none"}
_SCALAR_TYPES = {"string_type", "int_type", "float_type", "bool_type", "literal_error"}
# Error types where a non-string input means YAML 1.1 read the text as something else.
_WANTS_TEXT = {"string_type", "literal_error", "enum"}


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model whose fields are allowed where ``loc`` points (for "did you mean" hints)."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = inner_model(field.annotation)
        if model is None:
            return None
    return model  # type: ignore[no-any-return]


def inner_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field's annotation (``Model | None``, ``list[Model]``...)."""
    todo = [annotation]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
        todo.extend(getattr(t, "__args__", ()))
    return None


def _read_as(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if value is None:
        return "null (no value)"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"the date {value}"
    return f"a {type(value).__name__}"


def _quote_hint(err: ErrorDetails, written: str | None) -> str | None:
    value = err.get("input")
    if err["type"] not in _WANTS_TEXT or isinstance(value, (str, dict, list)):
        return None
    if written is None or written == "":
        return "a value is needed here"
    return f"YAML reads {written} as {_read_as(value)}, not text; quote it: '{written}'"


def _location(err: ErrorDetails) -> Loc:
    # Drop pydantic's internal union/function markers from the location.
    loc = tuple(
        p
        for p in err["loc"]
        if not (isinstance(p, str) and ("[" in p or p in _UNION_BRANCHES or p == ""))
    )
    error = (err.get("ctx") or {}).get("error")
    if isinstance(error, FieldError):
        loc = (*loc, *error.loc)
    return loc


# Keys an earlier bakery read, and where their settings live now.
MOVED: dict[tuple[str, ...], str] = {
    ("spawner", "custom_image"): "moved: the course's packages are now environment: (the same "
    "apt, conda and pip lists, for both spawners, locked with `bakery lock`); write "
    "environment: {pip: [...], apt: [...], conda: [...]} at the top level",
}


def _message(err: ErrorDetails, loc: Loc, source: Source, root: type[BaseModel]) -> str:
    hint = _quote_hint(err, source.written.get(loc))
    if hint:
        return hint
    given = err.get("input")
    if err["type"] in _SCALAR_TYPES and isinstance(given, (list, dict)):
        return f"expected one value here, not a {'list' if isinstance(given, list) else 'mapping'}"
    if err["type"] == "extra_forbidden" and tuple(map(str, loc)) in MOVED:
        return MOVED[tuple(map(str, loc))]
    if err["type"] == "extra_forbidden":
        model = _model_at(root, loc)
        fields = model.model_fields.items() if model else []
        allowed = [f.alias or name for name, f in fields]  # `from`, a keyword, is an alias
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        did = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key{did} (allowed here: {', '.join(allowed)})"
    if err["type"] == "missing":
        return "required field is missing"
    return err["msg"].removeprefix("Value error, ")


def format_errors(path: Path, exc: ValidationError, source: Source, root: type[BaseModel]) -> str:
    """One ``file:line: field: message`` line per error, in file order."""
    out: list[tuple[int, str]] = []
    for err in exc.errors(include_url=False):
        loc = _location(err)
        line = source.line_of(loc)
        where = f"{path}:{line}" if line else str(path)
        field = ".".join(str(p) for p in loc) or "(top level)"
        # One message per field (a union reports each of its branches).
        if any(text.startswith(f"{where}: {field}: ") for _, text in out):
            continue
        out.append((line or 0, f"{where}: {field}: {_message(err, loc, source, root)}"))
    return "\n".join(text for _, text in sorted(out, key=lambda item: item[0]))
