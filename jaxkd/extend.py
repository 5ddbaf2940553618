"""Public extension points: a user's own terms, models and datasets, by name.

::

    import jaxkd

    @jaxkd.register_term("my_pkt")          # then ObjectiveConfig({"my_pkt": {"weight": 1000}})
    def my_pkt(*, eps: float = 1e-7) -> jaxkd.terms.Term: ...

    @jaxkd.register_model("tiny_cnn", widths="channels", spatial=True)   # then ModelConfig("tiny_cnn")
    class TinyCNN(nnx.Module): ...

    jaxkd.register_dataset("my_data", lambda: Dataset.from_arrays(...))  # then DataConfig("my_data")

A registered name is usable everywhere a built-in one is: configs, presets,
``--set`` and the command line (``jaxkd run --plugin my_methods.py ...``
imports the module that registers them, see :mod:`jaxkd.plugins`). A
built-in name cannot be taken (one-line :class:`~jaxkd.errors.ConfigError`);
a name the user registered may be registered again (a notebook cell rerun),
the new object replacing the old. What each user registration is, its
qualified name and a hash of its source, is part of every run's fingerprint
(:func:`registered`), so a resume refuses a changed method.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable

from jaxkd.errors import ConfigError, check

KINDS = ("term", "model", "dataset")

# name -> the object registered, for the user's registrations only (the built-ins are not listed).
_USER: dict[str, dict[str, object]] = {kind: {} for kind in KINDS}


def _registry(kind: str) -> dict:
    if kind == "term":
        from jaxkd.terms import TERMS

        return TERMS
    if kind == "model":
        from jaxkd.models import MODELS

        return MODELS
    from jaxkd.data import OFFLINE

    return OFFLINE


def _check_name(kind: str, name) -> None:
    check(
        isinstance(name, str) and name.isidentifier() and not name.startswith("tfds"),
        f"a {kind} name must be a Python identifier (letters, digits, underscores) not starting with 'tfds', "
        f"got {name!r}",
    )
    if is_builtin(kind, name):
        raise ConfigError(f"{kind} name {name!r} is a built-in jaxkd {kind}; register yours under another name")


def _source_hash(obj) -> str | None:
    """SHA-256 (16 hex digits) of the source of ``obj`` (a function or class), where Python can find it."""
    target = getattr(obj, "func", obj)  # functools.partial: its function
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _describe(obj) -> dict:
    target = getattr(obj, "func", obj)
    return {
        "object": f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__name__)}",
        "source_sha256": _source_hash(obj),
    }


def register_term(name: str, factory: Callable | None = None):
    """Register a term factory under ``name``; usable as ``@register_term("name")`` or a call.

    ``factory(**options) -> Term`` takes the term's options as keyword
    arguments (typed by their annotations for ``--set``); ``weight``,
    ``kind``, ``ramp_steps``, ``phases`` and ``phase`` are handled by jaxkd
    for every term. ``docs/extending.md`` lists every :class:`jaxkd.terms.Term`
    field and what the trainer does with it.
    """

    def add(f):
        check(callable(f), f"register_term({name!r}, ...) needs a factory function returning a Term, got {f!r}")
        _check_name("term", name)
        _registry("term")[name] = f
        _USER["term"][name] = f
        return f

    return add if factory is None else add(factory)


def register_model(name: str, ctor: Callable | None = None, *, widths: str | None = None, spatial: bool = False):
    """Register a Flax NNX model class (or constructor) under ``name``.

    ``ctor(in_shape, num_classes, *, rngs, **kwargs)`` builds an
    ``nnx.Module`` whose call maps a batch to ``(logits, features)``, with
    ``features`` a dict of named activations that feature terms read (e.g.
    ``{"pooled": ...}``). ``widths``: the keyword through which
    ``ModelConfig.widths`` reaches the constructor (None: fixed widths).
    ``spatial``: the model takes ``[H, W, C]`` images (checked before
    building) and accepts ``dtype="bfloat16"`` as a keyword.
    """

    def add(c):
        check(callable(c), f"register_model({name!r}, ...) needs a model class or constructor, got {c!r}")
        _check_name("model", name)
        from jaxkd import models

        models.MODELS[name] = c
        models.set_model_options(name, widths=widths, spatial=spatial)
        _USER["model"][name] = c
        return c

    return add if ctor is None else add(ctor)


def register_dataset(name: str, source=None):
    """Register a dataset under ``name``: a :class:`jaxkd.data.Dataset` or a function returning one.

    A function is called each time the dataset is loaded (so it can read
    files lazily); a :class:`Dataset` is kept in memory. The dataset's
    content hash, not its name, identifies it in a run's fingerprint.
    """
    from jaxkd.data import Dataset

    def add(s):
        if isinstance(s, Dataset):
            loader = _Fixed(s)
        else:
            check(callable(s), f"register_dataset({name!r}, ...) needs a Dataset or a function returning it, got {s!r}")
            loader = _Checked(name, s)
        _check_name("dataset", name)
        _registry("dataset")[name] = loader
        _USER["dataset"][name] = s
        return s

    return add if source is None else add(source)


class _Fixed:
    """A registered in-memory dataset, loaded as itself."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __call__(self):
        return self.dataset


class _Checked:
    """A registered loader whose result is checked to be a Dataset (one line otherwise)."""

    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    def __call__(self):
        from jaxkd.data import Dataset

        out = self.fn()
        check(
            isinstance(out, Dataset),
            f"the loader registered as dataset {self.name!r} returned {type(out).__name__}, not a jaxkd Dataset; "
            "build one with Dataset.from_arrays(x_train, y_train, x_test, y_test, name=...)",
        )
        return out


def unregister(kind: str, name: str) -> None:
    """Remove the user's registration ``name`` of ``kind`` (a built-in cannot be removed)."""
    check(kind in KINDS, f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    check(name in _USER[kind], f"{kind} {name!r} is not a user registration")
    del _USER[kind][name]
    del _registry(kind)[name]
    if kind == "model":
        from jaxkd.models import set_model_options

        set_model_options(name)


def registered() -> dict:
    """The user's registrations: ``{"term": {name: {"object", "source_sha256"}}, ...}``, empty kinds left out."""
    from jaxkd.data import Dataset

    out = {}
    for kind in KINDS:
        entries = {}
        for name, obj in sorted(_USER[kind].items()):
            entries[name] = {"kind": "in-memory Dataset"} if isinstance(obj, Dataset) else _describe(obj)
        if entries:
            out[kind] = entries
    return out


def is_builtin(kind: str, name: str) -> bool:
    """Whether ``name`` is one of jaxkd's own names of ``kind``."""
    return name in _registry(kind) and name not in _USER[kind]


def is_user(kind: str, name: str) -> bool:
    """Whether ``name`` of ``kind`` was registered by the user (not a built-in)."""
    return name in _USER[kind]
