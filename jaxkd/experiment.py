"""Helpers shared by experiment scripts: presets, overrides, teachers, comparisons, output.

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
from collections.abc import Mapping

import jax
import numpy as np

from jaxkd import results, stats
from jaxkd.config import RunConfig
from jaxkd.errors import ConfigError, check
from jaxkd.sweep import run_sweep
from jaxkd.teacher import Teacher
from jaxkd.train import make_train

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


class TeacherStudentRuns:
    """Mixin for experiment configs with ``teacher_model``, ``teacher_recipe``, ``model``, ``objective``,
    ``recipe``, ``data`` and ``eval`` fields: the teacher's and the student's :class:`RunConfig`."""

    def teacher_config(self) -> RunConfig:
        return RunConfig(model=self.teacher_model, recipe=self.teacher_recipe, data=self.data, eval=self.eval)

    def check_chunks(self) -> None:
        """Check ``chunk_steps`` before any work, for runs whose length is given in steps.

        Epoch-based lengths depend on the dataset's size and are checked when each sweep starts.
        """
        c = getattr(self, "chunk_steps", None)
        if c is None:
            return
        check(c > 0, f"chunk_steps must be positive, got {c}")
        check(
            self.eval.every is None or c % self.eval.every == 0,
            f"chunk_steps ({c}) must be a multiple of the evaluation interval (eval.every = {self.eval.every})",
        )
        for who, recipe in (("teacher", self.teacher_recipe), ("student", self.recipe)):
            check(
                recipe.steps is None or recipe.steps % c == 0,
                f"chunk_steps ({c}) must divide the {who}'s {recipe.steps} steps",
            )

    def student_config(self) -> RunConfig:
        return RunConfig(model=self.model, objective=self.objective, recipe=self.recipe, data=self.data, eval=self.eval)


def train_teacher(
    config: RunConfig,
    dataset,
    key,
    *,
    n_seeds=1,
    per_seed=False,
    checkpoint_dir=None,
    resume=False,
    overwrite=False,
    progress=True,
    chunk_steps=None,
):
    """Train a teacher sweep; returns ``(Teacher, SweepResult)``.

    With ``per_seed=False`` the teacher is seed 0; with ``per_seed=True``
    it is the stack of all ``n_seeds`` teachers (student seed s distils from
    teacher s).
    """
    trainer = make_train(config, dataset)
    result = run_sweep(
        trainer,
        key,
        n_seeds,
        chunk_steps=chunk_steps,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        desc="teacher",
    )
    if result.diverged[:, 0].any():
        raise ConfigError("the teacher diverged (NaN/Inf); lower its learning rate")
    params, rest = result.states.params["model"], result.states.rest
    if per_seed:
        take = lambda t: jax.tree.map(lambda x: x[:, 0], t)  # noqa: E731
    else:
        take = lambda t: jax.tree.map(lambda x: x[0, 0], t)  # noqa: E731
    return Teacher(trainer.model, take(params), take(rest), per_seed=per_seed), result


def method_conditions(objective, methods, *, kd_ce_weight: float | None = None) -> dict[str, dict[str, float]]:
    """Method -> grid point: its own term at its weight plus CE, every other term at weight 0.

    ``methods[0]`` is the baseline (``ce``: CE alone). ``kd_ce_weight``
    replaces CE's weight in the ``kd`` condition (RepDistiller's ``-r 0.1``).
    """
    hp = objective.build()[1]
    out = {}
    for m in methods:
        point = {f"{t}.weight": 0.0 for t in objective.terms}
        point["ce.weight"] = kd_ce_weight if (m == "kd" and kd_ce_weight is not None) else hp["ce.weight"]
        point[f"{m}.weight"] = hp[f"{m}.weight"] if m != "ce" else hp["ce.weight"]
        out[m] = point
    return out


def run_methods(trainer, key, n_seeds: int, conditions: dict, teacher_result, **sweep_kwargs):
    """Every condition as one grid point of one sweep (seeds paired); returns ``(result, rows, summary)``.

    ``summary`` holds the teacher's and each condition's summaries, paired
    t-tests of every condition against the first (Holm-corrected, Cohen's
    d_z) on test accuracy and agreement with the teacher, and a legend of
    each condition's non-zero weights.
    """
    names = list(conditions)
    grid = {k: [conditions[c][k] for c in names] for k in conditions[names[0]]}
    result = run_sweep(trainer, key, n_seeds, grid, **sweep_kwargs)
    rows = results.records_from_sweep(result, names)
    summary = {
        "conditions": results.summarize_sweep(result, names),
        "comparisons": compare_to_baseline(result, names, names[0], ("test/acc", "test/agreement")),
        "legend": {n: {k: v for k, v in conditions[n].items() if v} for n in names},
        "teacher_live": trainer.teacher_live,
    }
    if teacher_result is not None:
        rows = results.records_from_sweep(teacher_result, ["teacher"]) + rows
        summary = {"teacher": results.summarize_sweep(teacher_result, ["teacher"])["teacher"], **summary}
    return result, rows, summary


def compare_to_baseline(result, names: list[str], baseline: str, metrics, *, select: str = "val/acc") -> dict:
    """Paired t-tests of every condition against ``baseline`` (seeds paired), Holm-corrected per metric.

    Each metric is compared at the validation-selected evaluation
    (``selected``) and at the last one (``last``); effect size Cohen's d_z.
    """
    pick = results.selected_index(result, select)
    b = names.index(baseline)
    out = {}
    for metric in metrics:
        if metric not in result.history:
            continue
        h = np.where(result.diverged[..., None], np.nan, result.history[metric])
        for when, vals in (("selected", np.take_along_axis(h, pick[..., None], -1)[..., 0]), ("last", h[..., -1])):
            tests = {
                f"{n} - {baseline}": stats.paired_test(vals[:, g], vals[:, b])
                for g, n in enumerate(names)
                if n != baseline
            }
            adj = stats.holm([t["p"] if np.isfinite(t["p"]) else 1.0 for t in tests.values()])
            for t, p in zip(tests.values(), adj):
                t["p_holm"] = float(p)
            out.setdefault(metric, {})[when] = tests
    return out


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
