"""The one exception type for user mistakes (bad names, values, paths).

The CLI turns a :class:`ConfigError` into a single ``jaxkd: error: ...`` line
and exit status 2; anything else is a bug and keeps its traceback.
"""


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
