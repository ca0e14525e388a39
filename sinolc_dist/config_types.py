"""Configuration values checked against the type of the field that takes them, naming the key.

YAML reads ``retries: two`` as a string and ``chunk: 4096.5`` as a float; a
dataclass takes either and fails later with a message that names no key
(``'<' not supported between 'str' and 'int'``).  :func:`check_types` compares
every value with its field's annotation first, so the error says the file,
the key path and what the key takes.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin, get_type_hints

from sinolc_dist.errors import ConfigError

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def matches(value: object, hint: Any) -> bool:
    """Whether ``value`` (as YAML reads it) fits the annotation ``hint``; unknown hints accept anything."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, int | float)
    if hint in _NAMES:
        return isinstance(value, hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args, strict=True))
    if hint is Mapping or origin is Mapping or hint is dict or origin is dict:
        return isinstance(value, Mapping)
    return True


def describe(hint: Any) -> str:
    """What an annotation asks for, in words: ``int | None`` → "an integer (or nothing)"."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        named = [describe(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" (or nothing)" if type(None) in args else "")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0]).split(' ', 1)[1]}s"
        return f"a list of {len(args)} {describe(args[0]).split(' ', 1)[1]}s"
    if hint is Mapping or origin is Mapping or hint is dict or origin is dict:
        return "a mapping of KEY: VALUE"
    return _NAMES.get(hint, str(hint))


def field_types(cls: type, **replace: Any) -> dict[str, Any]:
    """The annotations of a dataclass's fields, with ``replace`` taking precedence (YAML forms)."""
    return {**get_type_hints(cls), **replace}


def check_types(source: str, section: str, data: Mapping[str, Any], hints: Mapping[str, Any]) -> None:
    """Refuse the first value of ``data`` that does not fit its key's annotation in ``hints``.

    The one-line error reads ``<source>: <section>.<key>: expected an integer,
    got 'two'`` (no section: ``<source>: <key>: …``); keys without a hint pass.
    """
    for key, value in data.items():
        if key in hints and not matches(value, hints[key]):
            path = f"{section}.{key}" if section else str(key)
            raise ConfigError(f"{source}: {path}: expected {describe(hints[key])}, got {value!r}")
