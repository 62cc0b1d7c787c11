"""Load the JSON tables in ``dsn_lab/resources/`` and check them against a schema.

Why: the pinned data (split files, dataset specs, EmojiSketch's packages and split tables) is data, not code,
so it lives in JSON files one can read and diff. JSON because the package supports Python 3.10, which has no
``tomllib``. A hand edit that breaks a file must fail at import with the file, the entry and what was
expected, not as a KeyError deep inside a build.

A schema is a Python value: a type (``str``, ``int``, ``float``, ``bool``, ``None``), a tuple (any of its
members), a one-element list (a list of that), :class:`MapOf` (an object with free keys) or a dict (an object
with exactly these keys; a key ending in ``?`` may be absent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

PROSE = (str, [str])
_UNSET = object()  # free text: a string, or a list of lines (joined by spaces) so the file stays narrow


class ResourceError(ValueError):
    """A packaged table is missing, is not valid JSON, or does not match its schema."""


@dataclass(frozen=True)
class MapOf:
    """Schema of a JSON object whose keys are free strings and whose values all match ``value``."""

    value: Any


def resource_label(name: str) -> str:
    return f"dsn_lab/resources/{name}"


def read_resource(name: str) -> bytes:
    """The bytes of ``dsn_lab/resources/<name>``."""
    try:
        return resources.files("dsn_lab").joinpath("resources", name).read_bytes()
    except OSError as exc:
        raise ResourceError(
            f"{resource_label(name)} cannot be read ({exc}). Fix: reinstall dsn_lab (the file ships with it)."
        ) from exc


def load_table(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Parse ``dsn_lab/resources/<name>`` and check it against ``schema``; raise :class:`ResourceError`."""
    label = resource_label(name)
    try:
        data = json.loads(read_resource(name).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResourceError(f"{label}: not valid JSON ({exc}). Fix it, or restore it from git.") from None
    check(data, schema, label, "")
    return data


def table_error(label: str, where: str, expected: str, got: Any = _UNSET) -> ResourceError:
    """The error for entry ``where`` of ``label``: what was expected (and, if given, what was there)."""
    seen = "" if got is _UNSET else f", got {_short(got)}"
    return ResourceError(
        f"{label}: entry {where or '(top level)'}: expected {expected}{seen}. Fix the file, or restore it "
        "from git."
    )


def check(value: Any, schema: Any, label: str, where: str) -> None:
    """Raise :class:`ResourceError` naming ``label`` and ``where`` unless ``value`` matches ``schema``."""
    if not _matches(value, schema, label, where):
        raise table_error(label, where, describe(schema), value)


def _matches(value: Any, schema: Any, label: str, where: str) -> bool:
    if isinstance(schema, tuple):
        return any(_matches_quietly(value, s) for s in schema) or _raise_inner(value, schema, label, where)
    if schema is None:
        return value is None
    if schema is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if schema is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(schema, type):
        return isinstance(value, schema)
    if isinstance(schema, list):
        if not isinstance(value, list):
            return False
        for i, item in enumerate(value):
            check(item, schema[0], label, f"{where}[{i}]")
        return True
    if isinstance(schema, MapOf):
        if not isinstance(value, dict):
            return False
        for key, item in value.items():
            check(item, schema.value, label, _join(where, key))
        return True
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return False
        fields = {k.rstrip("?"): (k.endswith("?"), s) for k, s in schema.items()}
        for key in value:
            if key not in fields:
                raise table_error(label, _join(where, key), f"no such key (known: {', '.join(fields)})")
        for key, (optional, sub) in fields.items():
            if key in value:
                check(value[key], sub, label, _join(where, key))
            elif not optional:
                raise table_error(label, _join(where, key), f"{describe(sub)} (the key is missing)")
        return True
    raise TypeError(f"bad schema {schema!r}")


def _matches_quietly(value: Any, schema: Any) -> bool:
    try:
        return _matches(value, schema, "", "")
    except ResourceError:
        return False


def _raise_inner(value: Any, schema: tuple, label: str, where: str) -> bool:
    """Among alternatives, report the inner error of the one whose container type fits (clearer)."""
    for s in schema:
        if (isinstance(s, list) and isinstance(value, list)) or (
            isinstance(s, (dict, MapOf)) and isinstance(value, dict)
        ):
            _matches(value, s, label, where)
    return False


def describe(schema: Any) -> str:
    """``schema`` in words, for error messages."""
    if isinstance(schema, tuple):
        return " or ".join(describe(s) for s in schema)
    if schema is None:
        return "null"
    if isinstance(schema, type):
        return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
            schema, schema.__name__
        )
    if isinstance(schema, list):
        return f"a list of ({describe(schema[0])})"
    if isinstance(schema, MapOf):
        return f"an object whose values are {describe(schema.value)}"
    return "an object with keys " + ", ".join(k.rstrip("?") for k in schema)


def prose(value: str | list[str]) -> str:
    """A :data:`PROSE` value as one string."""
    return value if isinstance(value, str) else " ".join(value)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."
