"""The one exception type for user mistakes (bad names, values, paths).

The CLI turns a :class:`ConfigError` into a single ``jaxkd: error: ...`` line
and exit status 2; anything else is a bug and keeps its traceback.
"""

import numpy as np


class ConfigError(ValueError):
    """A user-facing error: the message says what is wrong and what to do."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)


def check_name(kind: str, name: str, known) -> None:
    """Raise a one-line error for an unknown ``name`` of ``kind``."""
    known = sorted(known)
    if name not in known:
        raise ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(known)}")


# Constraint kinds a declared float may carry; the message says what is allowed.
_CONSTRAINTS = {
    "positive": (lambda v: v > 0, "must be positive"),
    "nonneg": (lambda v: v >= 0, "must be >= 0"),
    "unit": (lambda v: 0 <= v <= 1, "must lie in [0, 1]"),
    "unit_open": (lambda v: 0 <= v < 1, "must lie in [0, 1)"),
    "any": (lambda v: True, ""),
}


def check_value(name: str, value, constraint: str) -> None:
    """One-line error unless every value of ``value`` (scalar or 1-D) is finite and satisfies ``constraint``."""
    ok, says = _CONSTRAINTS[constraint]
    for v in np.atleast_1d(np.asarray(value, np.float64)):
        check(np.isfinite(v), f"{name} must be finite, got {v:g}")
        check(ok(v), f"{name} {says}, got {v:g}")
