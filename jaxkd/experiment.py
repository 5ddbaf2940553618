"""Helpers shared by experiment scripts: presets, overrides, teachers, comparisons, output.

An experiment module (in ``experiments/``) defines a frozen ``Config``
dataclass, ``PRESETS = {"smoke": ..., "default": ..., "paper": ...}`` and
``run(config, out_dir, *, resume, progress) -> dict``; the registry in
``experiments/__init__.py`` lists them.
"""

from __future__ import annotations

import jax

from jaxkd import results
from jaxkd.config import RunConfig
from jaxkd.errors import ConfigError, check
from jaxkd.sweep import run_sweep
from jaxkd.teacher import Teacher, normalisation
from jaxkd.train import make_train


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


def check_seeds_fit(config: RunConfig, dataset, n_seeds: int, grid_size: int = 1) -> None:
    """Refuse, before any training, a sweep whose runs' parameters alone cannot fit in memory.

    A lower bound (each run holds its current and selected parameters and an
    optimiser's two moments: four copies); the exact check, from the
    compiled program's ``memory_analysis``, runs when the sweep starts.
    """
    from jaxkd.models import make_model
    from jaxkd.program import memory_limit

    m = config.model
    model = make_model(m.name, dataset.in_shape, dataset.num_classes, m.widths, m.dtype)
    leaves = jax.tree.leaves(jax.eval_shape(model.init, jax.random.key(0)))
    per_run = 4 * sum(a.size * a.dtype.itemsize for a in leaves)
    have = memory_limit()  # --max-memory, else the device's
    if have is not None and per_run * n_seeds * grid_size > have:
        raise ConfigError(
            f"{n_seeds} seeds x {grid_size} conditions need at least {per_run * n_seeds * grid_size / 2**30:.1f} GiB "
            f"for their parameters alone but {have / 2**30:.1f} GiB are available; at most about "
            f"{have // (per_run * grid_size)} seeds fit: lower --seeds"
        )


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
    model: str = "selected",
    fingerprint: dict | None = None,
):
    """Train a teacher sweep; returns ``(Teacher, SweepResult)``.

    With ``per_seed=False`` the teacher is seed 0; with ``per_seed=True``
    it is the stack of all ``n_seeds`` teachers (student seed s distils from
    teacher s). ``model``: the validation-selected model of each teacher run
    (default: the one its summary reports) or its ``last``. The teacher
    carries its data's normalisation.
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
        fingerprint=fingerprint,
    )
    if result.diverged[:, 0].any():
        raise ConfigError("the teacher diverged (NaN/Inf); lower its learning rate")
    params, rest = result.model(model)
    if per_seed:
        take = lambda t: jax.tree.map(lambda x: x[:, 0], t)  # noqa: E731
    else:
        take = lambda t: jax.tree.map(lambda x: x[0, 0], t)  # noqa: E731
    mean, std = normalisation(trainer.mean, trainer.std)
    teacher = Teacher(
        trainer.model, take(params), take(rest), per_seed=per_seed, mean=mean, std=std, normalisation_known=True
    )
    return teacher, result


def teacher_summary(teacher_result, *, model: str = "selected") -> dict:
    """The teacher's summary, saying which of its models students distil from (and at which steps)."""
    out = results.summarize_sweep(teacher_result, ["teacher"])["teacher"]
    out["distilled_from"] = model
    return out


SHARED_TEACHER_NOTE = (
    "one teacher and one validation split are shared by every student seed: confidence intervals and tests "
    "cover the variation of student seeds only, not of the teacher or the split"
)


def scope(shared_teacher: bool) -> dict:
    """What a summary's intervals cover; with a shared teacher, the statement :data:`SHARED_TEACHER_NOTE`."""
    out = {"shared_teacher": bool(shared_teacher), "model": "selected"}
    if shared_teacher:
        out["note"] = SHARED_TEACHER_NOTE
    return out


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

    The study helper (:func:`jaxkd.study.compare`) with the first condition
    as the baseline: ``summary`` holds the teacher's and each condition's
    summaries, paired t-tests of every condition against the first
    (Holm-corrected, Cohen's d_z) on test accuracy and agreement with the
    teacher, and a legend of each condition's non-zero values.
    """
    from jaxkd.study import compare

    legend = {n: {k: v for k, v in c.items() if v} for n, c in conditions.items()}
    s = compare(trainer, key, n_seeds, conditions, teacher_run=teacher_result, legend=legend, **sweep_kwargs)
    return s.result, s.rows, s.summary


def label_test(test: dict, metric: str, at: str | None, comparison: str) -> dict:
    """``test`` with the fields ``jaxkd report`` reads it by: the metric, the evaluation point, the comparison.

    ``at`` is ``"selected"`` or ``"last"``, or None where a run records one point per seed.
    """
    return {"comparison": comparison, "metric": metric, "at": at, **test}


def label_tests(tests: dict, metric: str, at: str | None = None) -> dict:
    """:func:`label_test` on every test of a ``{comparison: test}`` family."""
    return {name: label_test(t, metric, at, name) for name, t in tests.items()}


def compare_to_baseline(result, names: list[str], baseline: str, metrics) -> dict:
    """Paired tests of every condition against ``baseline``: :func:`jaxkd.study.compare_to_baseline`."""
    from jaxkd.study import compare_to_baseline as compare

    return compare(result, names, baseline, metrics)
