"""Dotted ``--set key=value`` overrides of experiment configs, typed by the dataclass fields.

``apply_overrides(config, ["recipe.learning_rate=0.1", "objective.kd.temperature=2"])``
returns a new, validated config; every unreadable value or unknown key is
one :class:`jaxkd.errors.ConfigError` line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping

from jaxkd.errors import ConfigError

_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return f"a comma-separated list of {_PLURALS.get(args[0], _describe(args[0]))}"
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _parse(hint, text: str):
    """Parse ``text`` as a value of type ``hint`` (bool, int, float, str, tuples, Optional)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in args:
            return None
        return _parse(next(a for a in args if a is not type(None)), text)
    if hint is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(text)
        return text.lower() in ("true", "1")
    if hint in (int, float, str):
        return hint(text)
    if origin is tuple:
        items = [v.strip() for v in text.strip("()[] ").split(",") if v.strip()]
        if not items:
            raise ValueError(text)
        return tuple(_parse(args[0], v) for v in items)
    raise ValueError(text)


def _parse_like(old, text: str, key: str):
    """Parse a term option by the type of its current value (floats by default)."""
    if isinstance(old, bool):
        return _parse(bool, text)
    if isinstance(old, str):
        return text
    if isinstance(old, tuple):
        return _parse(tuple[str, ...], text)
    try:
        return float(text)
    except ValueError:
        if old is None:
            return text
        raise ConfigError(f"--set {key}={text}: cannot read {text!r} as a number") from None


def _set(obj, path: list[str], text: str, full: str):
    """Return ``obj`` with the field at ``path`` set from ``text`` (dataclasses and mappings, recursively)."""
    head, rest = path[0], path[1:]
    if dataclasses.is_dataclass(obj):
        fields = {f.name for f in dataclasses.fields(obj)}
        if head not in fields:
            prefix = full[: len(full) - len(".".join(path))]
            raise ConfigError(
                f"unknown config key {full!r}; valid keys: {', '.join(prefix + f for f in sorted(fields))}"
            )
        if rest:
            value = _set(getattr(obj, head), rest, text, full)
        else:
            hint = typing.get_type_hints(type(obj))[head]
            sub = getattr(obj, head)
            if dataclasses.is_dataclass(sub) or isinstance(sub, Mapping):
                keys = [f.name for f in dataclasses.fields(sub)] if dataclasses.is_dataclass(sub) else list(sub)
                raise ConfigError(
                    f"{full} is a group of settings, not a value; set one of its keys, e.g. "
                    f"{', '.join(f'{full}.{k}=...' for k in keys[:4])}"
                )
            try:
                value = _parse(hint, text)
            except (ValueError, TypeError):
                raise ConfigError(f"--set {full}={text}: cannot read {text!r} as {_describe(hint)}") from None
        return dataclasses.replace(obj, **{head: value})
    if isinstance(obj, Mapping):
        if rest:  # a new name adds an entry (a new objective term), validated with the rest
            return {**obj, head: _set(obj.get(head, {}), rest, text, full)}
        if isinstance(obj.get(head), Mapping):
            raise ConfigError(
                f"{full} is a group of settings, not a value; set one of its keys, e.g. "
                f"{', '.join(f'{full}.{k}=...' for k in list(obj[head])[:4])}"
            )
        return {**obj, head: _parse_like(obj.get(head), text, full)}
    raise ConfigError(f"unknown config key {full!r}: {'.'.join(path)} is below a plain value")


def apply_overrides(config, overrides: list[str], *, n_seeds: int | None = None):
    """Return ``config`` with ``key=value`` overrides; dotted keys reach nested parts.

    ``--set recipe.learning_rate=0.1``, ``--set objective.terms.dkd.beta=4``
    (``objective.dkd.beta`` is accepted as a shorthand for the terms
    mapping). Values are typed by the dataclass fields; term options by
    their current value (floats by default). Validation runs on the result.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        path = key.split(".")
        i = _objective_depth(config, path)
        if i >= 0 and len(path) > i + 1 and path[i + 1] != "terms":
            path = [*path[: i + 1], "terms", *path[i + 1 :]]
        config = _set(config, path, value, key)
    if n_seeds is not None:
        if n_seeds <= 0:
            raise ConfigError(f"the number of seeds must be a positive integer, got {n_seeds}")
        config = dataclasses.replace(config, n_seeds=n_seeds)
    if hasattr(config, "n_seeds") and (not isinstance(config.n_seeds, int) or config.n_seeds <= 0):
        raise ConfigError(f"the number of seeds must be a positive integer, got {config.n_seeds}")
    return config


def _objective_depth(config, path) -> int:
    """Index in ``path`` of the first part that names an ObjectiveConfig (or -1)."""
    from jaxkd.config import ObjectiveConfig

    obj = config
    for i, part in enumerate(path):
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            return -1
        obj = getattr(obj, part)
        if isinstance(obj, ObjectiveConfig):
            return i
    return -1
