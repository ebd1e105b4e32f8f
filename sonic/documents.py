"""Typed decoding of the user's files (plan JSON, cluster YAML) with msgspec.

A parsed document (the ``dict``/``list`` tree ``json``/``yaml`` produce) is converted into the
module's typed dataclasses with :func:`msgspec.convert` (strict: no ``"2"`` for ``2``, no
``true`` for ``1``). msgspec names the path of a bad field (``Expected `int`, got `str` - at
`$.vms[1].cores```); :func:`decode` turns that into the project's one line: the file, the
field, what it must be, the value found and the fix, raised as the caller's
:class:`~sonic.errors.UserInputError` subclass (exit code 2).

msgspec checks types and required keys. It ignores unknown keys of dataclasses, so
:func:`unknown_keys` walks the document against the same dataclasses first; checks of values
(finite, ranges, duplicates, names) stay with the modules that own the formats.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from sonic.errors import UserInputError

T = TypeVar("T")

_MSGSPEC_ERROR = re.compile(r"^(?P<what>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<key>[^`]+)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def _kinds(want: str, mapping: str) -> str:
    words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
             "object": mapping, "array": "a list", "null": "null"}
    return " or ".join(words.get(part.strip(), part.strip()) for part in want.split("|"))


def steps(path: str) -> list[str | int]:
    """``$.vms[1].cores`` -> ``["vms", 1, "cores"]`` (``[...]``, a mapping's value, stays ``"..."``)."""
    out: list[str | int] = []
    for key, index in _STEP.findall(path.removeprefix("$")):
        out.append(key if key else (int(index) if index.isdigit() else "..."))
    return out


def dotted(path: list[str | int]) -> str:
    """``["vms", 1, "cores"]`` -> ``vms[1].cores``: how the cluster file's messages name a key."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else ("[...]" if step == "..." else f".{step}")
    return text.lstrip(".")


def _value_at(doc: Any, path: list[str | int]) -> tuple[bool, Any]:
    for step in path:
        if isinstance(step, int) and isinstance(doc, list) and 0 <= step < len(doc):
            doc = doc[step]
        elif isinstance(step, str) and step != "..." and isinstance(doc, dict) and step in doc:
            doc = doc[step]
        else:
            return False, None
    return True, doc


def short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode(doc: Any, into: type[T], *, source: str, error: type[UserInputError], fix: str,
           where: Callable[[list[str | int]], str] = dotted, mapping: str = "a mapping",
           at: list[str | int] | None = None) -> T:
    """``doc`` as an ``into`` (a dataclass or any type msgspec converts), or ``error`` with one line:
    ``SOURCE: WHERE must be an integer, got 'two' (at $.vms[1].cores); FIX``. ``at`` is the path
    of ``doc`` inside its file (msgspec names a mapping's value ``[...]``, so a caller that
    needs the key, e.g. a stage name, decodes each value on its own)."""
    try:
        return msgspec.convert(doc, into, strict=True)
    except msgspec.ValidationError as exc:
        raise error(describe(str(exc), doc, source=source, fix=fix, where=where, mapping=mapping,
                             at=at or [])) from None


def describe(message: str, doc: Any, *, source: str, fix: str,
             where: Callable[[list[str | int]], str] = dotted, mapping: str = "a mapping",
             at: list[str | int] | None = None) -> str:
    """msgspec's validation message as the project's one line (see :func:`decode`)."""
    parsed = _MSGSPEC_ERROR.match(message.replace("\n", " "))
    what, raw_path = (parsed.group("what"), parsed.group("path") or "$") if parsed else (message, "$")
    inner = steps(raw_path)
    path = [*(at or []), *inner]
    raw_path = "$" + ("." if path and isinstance(path[0], str) and path[0] != "..." else "") + dotted(path)
    place = where(path)
    expected, missing = _EXPECTED.match(what), _MISSING.match(what)
    if missing:
        text = f"{place + ': ' if place else ''}missing required key {missing.group('key')!r}"
    elif expected and expected.group("got") == "null":
        text = f"{place} must not be empty; give it {_kinds(expected.group('want'), mapping)}"
    elif expected:
        found, value = _value_at(doc, inner)
        got = short(value) if found else f"a {expected.group('got')}"
        text = f"{place} must be {_kinds(expected.group('want'), mapping)}, got {got}"
    elif what == "Number out of range":
        text = f"{place} is out of range"
    else:
        text = f"{place + ': ' if place else ''}{what}"
    return f"{source}: {text} (at {raw_path}); {fix}"


def unknown_keys(doc: Any, into: Any, path: list[str | int] | None = None) -> tuple[list[str | int], str, list[str]]:
    """The first key of ``doc`` that no field of the dataclass ``into`` (or of a dataclass inside
    it) names: (path of its mapping, the key, the allowed keys), or ``([], "", [])`` if none.
    Values of the wrong type are left to msgspec."""
    path = path or []
    hint = _strip_optional(into)
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type) and isinstance(doc, dict):
        hints = typing.get_type_hints(hint)
        allowed = [f.name for f in dataclasses.fields(hint)]
        for key in doc:
            if key not in hints:
                return path, str(key), allowed
        for key, value in doc.items():
            found = unknown_keys(value, hints[key], [*path, key])
            if found[1]:
                return found
    elif origin is list and isinstance(doc, list):
        (item,) = typing.get_args(hint)
        for i, value in enumerate(doc):
            found = unknown_keys(value, item, [*path, i])
            if found[1]:
                return found
    elif origin is dict and isinstance(doc, dict):
        _, item = typing.get_args(hint)
        for key, value in doc.items():
            found = unknown_keys(value, item, [*path, str(key)])
            if found[1]:
                return found
    return [], "", []


def _strip_optional(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint
