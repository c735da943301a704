"""Validation of dataset options (``--data-option KEY=VALUE``, ``build_dataset(..., **options)``) against type hints.

Every option of every dataset kind goes through :func:`coerce_option`: the value is checked against the type hint of
the parameter / dataclass field it fills, JSON-shaped values are converted (a list to a tuple, a dict to a config
dataclass such as ``SyncPairConfig``) and anything else is a :class:`DatasetError` that names the option and what it
accepts. Value checks beyond the type (ranges, choices) stay in the config dataclasses' ``__post_init__``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from pinlite_edge.errors import DataOptionError, DatasetError

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class _Mismatch(Exception):
    """Internal: the value does not fit the hint (turned into a DatasetError naming the option)."""


def describe_hint(hint: Any) -> str:
    """What a value of type ``hint`` looks like, in words (for error messages)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return "any value"
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_hint(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint is Path:
        return "a path (string)"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} values ({', '.join(describe_hint(a) for a in args)})"
    if origin is list:
        return f"a list of {_plural(args[0]) if args else 'values'}"
    if origin is dict:
        return f"an object of {describe_hint(args[1]) if len(args) == 2 else 'values'}"
    if dataclasses.is_dataclass(hint):
        return "an object with keys " + ", ".join(f.name for f in dataclasses.fields(hint))
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, describe_hint(hint))


def _coerce(value: Any, hint: Any, name: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        for member in args:  # first member that accepts the value wins (bool before dataclass, int before float)
            try:
                return _coerce(value, member, name, where)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is typing.Literal:
        if value in args:
            return value
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _Mismatch
    if hint is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise _Mismatch
        return float(value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if hint is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], name, where) for v in value)
        if args and len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a, name, where) for v, a in zip(value, args)) if args else tuple(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [_coerce(v, args[0], name, where) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        if len(args) == 2:
            return {_coerce(k, args[0], name, where): _coerce(v, args[1], name, where) for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return build_config(hint, value, name, where)
        raise _Mismatch
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _Mismatch
    return value  # an annotation we cannot check (a string forward reference): leave it to the callee


def coerce_option(value: Any, hint: Any, name: str, where: str) -> Any:
    """``value`` converted to ``hint``; a :class:`DatasetError` naming option ``name`` of ``where`` otherwise."""
    try:
        return _coerce(value, hint, name, where)
    except _Mismatch:
        hint_json = ""
        if isinstance(value, str) and value.strip()[:1] in ("{", "["):
            hint_json = "; it was not read as JSON: quote keys and strings, e.g. KEY='{\"name\": 2}'"
        raise DataOptionError(f"dataset option {name!r} of {where}: expected {describe_hint(hint)}, got {value!r}"
                              f" ({type(value).__name__}){hint_json}") from None


def build_config(cls: type, values: Mapping[str, Any], name: str, where: str | None = None) -> Any:
    """The dataclass ``cls`` from a JSON-like mapping: unknown keys, wrong types and invalid values are
    :class:`DatasetError` naming ``name`` (the option) and the allowed keys."""
    where = where or "the dataset"
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise DataOptionError(f"dataset option {name!r} of {where}: unknown key(s) {unknown}; allowed: {allowed}")
    kwargs = {k: coerce_option(v, hints[k], f"{name}.{k}", where) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except DatasetError as exc:  # DataOptionError included
        raise DataOptionError(f"dataset option {name!r} of {where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise DataOptionError(f"dataset option {name!r} of {where}: invalid value ({exc})") from None


def toggle_config(cls: type, value: Any, name: str, where: str | None = None) -> Any:
    """A dataset option that is a switch or a dataclass of settings: ``True`` -> ``cls()``, an instance -> itself, a
    mapping -> :func:`build_config`. ``None`` and ``False`` are the caller's to interpret (off, or a default)."""
    where = where or "the dataset"
    if value is True:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return build_config(cls, value, name, where)
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]
    raise DataOptionError(f"dataset option {name!r} of {where}: expected true, false or an object with keys "
                          f"{allowed}, got {value!r} ({type(value).__name__})")


def check_options(where: str, options: Mapping[str, Any], hints: Mapping[str, Any]) -> dict[str, Any]:
    """Every option known (a key of ``hints``) and of the right type; returns the coerced options."""
    unknown = sorted(set(options) - set(hints))
    if unknown:
        raise DataOptionError(f"unknown option(s) {unknown} for dataset {where}; allowed: {sorted(hints)}")
    return {k: coerce_option(v, hints[k], k, where) for k, v in options.items()}


def parameter_hints(func: Any, skip: set[str]) -> dict[str, Any]:
    """Type hints of ``func``'s keyword parameters (those not in ``skip``)."""
    hints = typing.get_type_hints(func)
    hints.pop("return", None)
    return {k: v for k, v in hints.items() if k not in skip}


def dataclass_hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}
