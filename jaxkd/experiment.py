"""Helpers shared by experiment scripts: presets, overrides, teachers, output.

An experiment module (in ``experiments/``) defines a frozen ``Config``
dataclass, ``PRESETS = {"smoke": ..., "default": ..., "paper": ...}`` and
``run(config, out_dir, *, resume, progress) -> dict``; the registry in
``experiments/__init__.py`` lists them.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing

import jax

from jaxkd import results
from jaxkd.errors import ConfigError
from jaxkd.sweep import run_sweep
from jaxkd.train import Teacher, TrainConfig, make_train


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
        return tuple(args[0](v) for v in text.strip("()[] ").split(",") if v.strip())
    raise ValueError(text)


def apply_overrides(config, overrides: list[str], *, n_seeds: int | None = None):
    """Return ``config`` with ``key=value`` overrides (typed by the dataclass fields)."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        if key not in fields:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(fields)}")
        hint = typing.get_type_hints(type(config))[key]
        try:
            changes[key] = _parse(hint, value)
        except (ValueError, TypeError):
            raise ConfigError(f"--set {key}={value}: cannot read {value!r} as {hint}") from None
    if n_seeds is not None:
        changes["n_seeds"] = n_seeds
    if "n_seeds" in changes and (not isinstance(changes["n_seeds"], int) or changes["n_seeds"] <= 0):
        raise ConfigError(f"the number of seeds must be a positive integer, got {changes['n_seeds']}")
    return dataclasses.replace(config, **changes)


def train_teacher(config: TrainConfig, dataset, key, *, n_seeds=1, checkpoint_dir=None, resume=False,
                  progress=True, chunk_steps=None):
    """Train a teacher (seed 0 of an ``n_seeds`` sweep); returns ``(Teacher, SweepResult)``."""
    trainer = make_train(config, dataset)
    result = run_sweep(trainer, key, n_seeds, chunk_steps=chunk_steps, checkpoint_dir=checkpoint_dir,
                       resume=resume, progress=progress, desc="teacher")
    if result.diverged[0, 0]:
        raise ConfigError("the teacher diverged (NaN/Inf); lower its learning rate")
    params, rest = jax.tree.map(lambda x: x[0, 0], (result.states.params, result.states.rest))
    return Teacher.from_model(trainer.model, params, rest, dataset), result


def write_outputs(out_dir: str, *, config, rows, summary, figures: dict[str, bytes], extra: dict | None = None):
    """Write config.json, records.csv, summary.json, env.json and figures, all-or-nothing."""
    files = {
        "config.json": results.to_json(dataclasses.asdict(config)),
        "records.csv": results.records_csv(rows),
        "summary.json": results.to_json(summary),
        "env.json": results.to_json(results.env_stamp()),
        **figures,
    }
    for name, content in (extra or {}).items():
        files[name] = content
    results.write_files(out_dir, files)
    return {name: os.path.join(os.path.abspath(out_dir), name) for name in files}
