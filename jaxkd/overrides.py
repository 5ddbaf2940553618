"""Dotted ``--set key=value`` overrides of experiment configs, typed by the dataclass fields.

``apply_overrides(config, ["recipe.learning_rate=0.1", "objective.kd.temperature=2"])``
returns a new, validated config; every unreadable value, unknown key or
out-of-range seed is one :class:`jaxkd.errors.ConfigError` line. Dataclass
fields are typed by their annotations, objective term options by the
annotations of the term factory's signature (:data:`jaxkd.terms.TERMS`), so
``objective.rcd.per_example=false`` is ``False``, never the truthy text.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
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


class _NonFinite(ValueError):
    """A number that reads as NaN or infinite (``nan``, ``inf``, ``1e400``)."""


def _short(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for an error line (a pasted file must not fill the terminal)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _read(hint, text: str, full: str):
    """``text`` parsed as ``hint`` for ``--set full=text``; one ConfigError line when it cannot be."""
    try:
        return _parse(hint, text)
    except _NonFinite as err:
        raise ConfigError(f"--set {full}={_short(text)}: {full} must be finite, got {_short(str(err))}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"--set {full}={_short(text)}: cannot read {_short(text)!r} as {_describe(hint)}") from None


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
    if hint is float:
        value = float(text)
        if not math.isfinite(value):  # "nan", "inf", "1e400": no setting means a non-finite number
            raise _NonFinite(text)
        return value
    if hint in (int, str):
        return hint(text)
    if origin is tuple:
        items = [v.strip() for v in text.strip("()[] ").split(",") if v.strip()]
        if not items:
            raise ValueError(text)
        return tuple(_parse(args[0], v) for v in items)
    raise ValueError(text)


# Options every term takes, read by build_term before the factory's own keyword arguments.
_COMMON_TERM_OPTIONS = {
    "kind": str,
    "weight": float,
    "ramp_steps": int,
    "phases": tuple[float, ...] | None,
    "phase": str | None,
}


def _term_option_hint(options, term: str, option: str):
    """The type of a term option: the common ones, else the factory's annotation (None: not an option)."""
    if option in _COMMON_TERM_OPTIONS:
        return _COMMON_TERM_OPTIONS[option]
    from jaxkd.terms import TERMS

    factory = TERMS.get(options.get("kind", term) if isinstance(options, Mapping) else term)
    if factory is None:
        return None
    hint = typing.get_type_hints(factory).get(option)
    return hint if option in inspect.signature(factory).parameters else None


def _set_term_option(terms, path: list[str], text: str, full: str):
    """``terms`` with ``path`` = ``[term, option]`` set from ``text``, typed by the term factory's signature.

    A new term name adds an entry (validated with the rest); an option the
    factory does not take is kept as text, for build_term to refuse by name.
    """
    if not path:
        raise ConfigError(
            f"{full} is a group of settings, not a value; set one of its keys, e.g. "
            f"{', '.join(f'{full}.{k}.weight=...' for k in list(terms)[:4])}"
        )
    term, rest = path[0], path[1:]
    options = terms.get(term, {})
    if not rest:
        keys = list(options) if isinstance(options, Mapping) else []
        raise ConfigError(
            f"{full} is a group of settings, not a value; set one of its keys, e.g. "
            f"{', '.join(f'{full}.{k}=...' for k in (keys or ['weight'])[:4])}"
        )
    if len(rest) > 1 or not isinstance(options, Mapping):
        raise ConfigError(f"unknown config key {full!r}: {'.'.join(rest)} is below a plain value")
    hint = _term_option_hint(options, term, rest[0])
    value = text if hint is None else _read(hint, text, full)
    return {**terms, term: {**options, rest[0]: value}}


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
        if head == "terms" and _is_objective(obj):
            value = _set_term_option(obj.terms, rest, text, full)
        elif rest:
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
            value = _read(hint, text, full)
        return _replace_unchecked(obj, **{head: value})
    raise ConfigError(f"unknown config key {full!r}: {'.'.join(path)} is below a plain value")


def _replace_unchecked(obj, **changes):
    """A copy of a frozen dataclass with ``changes``, not yet validated (:func:`_validated` does that once)."""
    new = copy.copy(obj)
    for name, value in changes.items():
        object.__setattr__(new, name, value)
    return new


def _validated(obj):
    """``obj`` rebuilt bottom-up through its constructors, so every part's validation runs on the final values."""
    if not dataclasses.is_dataclass(obj):
        return obj
    return type(obj)(**{f.name: _validated(getattr(obj, f.name)) for f in dataclasses.fields(obj)})


def apply_overrides(config, overrides: list[str], *, n_seeds: int | None = None):
    """Return ``config`` with ``key=value`` overrides; dotted keys reach nested parts.

    ``--set recipe.learning_rate=0.1``, ``--set objective.terms.dkd.beta=4``
    (``objective.dkd.beta`` is accepted as a shorthand for the terms
    mapping). Values are typed by the dataclass fields; term options by the
    annotations of their factory's signature (``weight``, ``ramp_steps``,
    ``phases``, ``phase`` and ``kind`` are common to all terms). A term's
    ``kind`` is applied before its other options, so those are typed by the
    factory it names. Seeds are checked against the range the random
    generators accept, and validation runs on the result.
    """
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        path = key.split(".")
        i = _objective_depth(config, path)
        if i >= 0 and len(path) > i + 1 and path[i + 1] != "terms":
            path = [*path[: i + 1], "terms", *path[i + 1 :]]
        parsed.append((i >= 0 and path[-1] == "kind", path, value, key))
    for _, path, value, key in sorted(parsed, key=lambda p: not p[0]):  # stable: kinds first, else in order
        config = _set(config, path, value, key)
    config = _validated(config)  # once, on the result: the order of --set lines does not matter
    has_seeds = dataclasses.is_dataclass(config) and "n_seeds" in {f.name for f in dataclasses.fields(config)}
    if n_seeds is not None:
        if not has_seeds:
            raise ConfigError("this experiment has no n_seeds to set (its settings: `jaxkd show`); drop --seeds")
        _check_n_seeds(n_seeds)
        config = dataclasses.replace(config, n_seeds=n_seeds)
    if has_seeds:
        _check_n_seeds(config.n_seeds)
    check_seeds(config)
    return config


# jax.random.key keeps the low 32 bits of a seed (without x64: key(2**32) is key(0)) and fails beyond
# 64 bits; NumPy's and scikit-learn's generators refuse negative seeds. So seeds live in [0, 2**32).
SEED_LIMIT = 2**32


def _check_n_seeds(n) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(f"the number of seeds must be a positive integer, got {n}")
    if n >= SEED_LIMIT:
        raise ConfigError(
            f"the number of seeds must be below 2**32 (each seed's key comes from a 32-bit split), got {n}; "
            "lower --seeds"
        )


def check_seeds(config, prefix: str = "") -> None:
    """One ConfigError line unless every field named ``seed`` or ``*_seed`` is an integer in [0, 2**32)."""
    if not dataclasses.is_dataclass(config):
        return
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_seeds(value, f"{key}.")
        elif f.name == "seed" or f.name.endswith("_seed"):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
                raise ConfigError(
                    f"{key} must be an integer in [0, 2**32 - 1] = [0, {SEED_LIMIT - 1}] (the random generators "
                    f"keep 32 bits), got {value}"
                )


def _is_objective(obj) -> bool:
    from jaxkd.config import ObjectiveConfig

    return isinstance(obj, ObjectiveConfig)


def _objective_depth(config, path) -> int:
    """Index in ``path`` of the first part that names an ObjectiveConfig (or -1)."""
    obj = config
    for i, part in enumerate(path):
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            return -1
        obj = getattr(obj, part)
        if _is_objective(obj):
            return i
    return -1
