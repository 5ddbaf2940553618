"""A study: named conditions × paired seeds as one compiled program, and the table with tests.

From "my grid of conditions" to "a table with tests"::

    from jaxkd import study

    teacher, teacher_run = study.train_teacher(teacher_config)
    s = study.run(student_config, {"ce": {"my_pkt.weight": 0.0}, "pkt": {}},
                  teacher=teacher, teacher_run=teacher_run, n_seeds=8, out="results/my_study")
    print(s.table())          # what `jaxkd report results/my_study` prints
    df = s.frame()            # the records as a pandas DataFrame (also jaxkd.results.load(dir))

A condition is a grid point: ``{hparam: value}`` over the run's sweepable
hyper-parameters (``learning_rate``, ``weight_decay``, ``momentum``,
``<term>.<option>`` such as ``kd.weight`` or ``kd.temperature``); what a
condition leaves out takes the config's value. Every condition runs with
the same seeds: seed ``s`` has the same initialisation, data order and
augmentation in every condition, so comparisons are paired. Each seed's
model is the evaluation it selected on the validation split inside the
compiled run (``eval.select``); the test set is only measured.

The summary is the built-in experiments' (they use :func:`compare` too):
per condition and metric, mean ± std, the 95% CI and n over seeds at the
selected and the last evaluation; paired t-tests of every condition against
the baseline (the first condition unless named), Holm-corrected per metric
and evaluation point, with Cohen's d_z; the legend of each condition's
values. :func:`run` writes it in the experiments' layout (``config.json``,
``records.csv``, ``summary.json``, ``env.json``, ``figure.png``), which
``jaxkd report`` reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import numpy as np

from jaxkd import results, stats
from jaxkd.errors import ConfigError, check

DEFAULT_METRICS = ("test/acc", "test/agreement")


@dataclasses.dataclass
class Study:
    """A finished study: the sweep, its conditions, records and summary.

    Attributes:
      result: the :class:`jaxkd.sweep.SweepResult` (axes ``[seed, condition]``).
      conditions: ``{name: {hparam: value}}``, every sweepable value filled in.
      baseline: the condition every other is tested against.
      rows: tidy records (``condition, seed, step, metric, value, diverged,
        selected``; ``selected`` marks each run's validation-selected evaluation).
      summary: what ``summary.json`` holds.
    """

    result: object
    conditions: dict[str, dict[str, float]]
    baseline: str
    rows: list[dict]
    summary: dict

    def frame(self):
        """The records as a pandas DataFrame (one row per condition × seed × metric × evaluation)."""
        return results.frame(self.rows)

    def table(self, *, metrics=None, at: str = "selected", fmt: str = "text") -> str:
        """The summary table with its tests, exactly as ``jaxkd report`` prints it."""
        from jaxkd.report import build_report_from_summary, render

        return render(build_report_from_summary(self.summary, metrics=metrics, at=at), fmt)

    def write(self, out_dir: str, *, config, figure: bool = True, extra: dict | None = None) -> dict:
        """Write the study in the experiments' layout (all or nothing, never over files jaxkd did not write)."""
        from jaxkd.outputs import write_outputs

        figures = {"figure.png": study_figure(self)} if figure else {}
        return write_outputs(out_dir, config=config, rows=self.rows, summary=self.summary, figures=figures, extra=extra)


def fill_conditions(trainer, conditions: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Every condition as a full grid point; unknown hyper-parameter names are one line."""
    check(
        isinstance(conditions, Mapping) and len(conditions) > 0,
        "a study needs at least one condition: {name: {hparam: value}}",
    )
    defaults = trainer.hparams()
    out = {}
    for name, point in conditions.items():
        check(isinstance(name, str) and name, f"condition names must be non-empty strings, got {name!r}")
        check(isinstance(point, Mapping), f"condition {name!r} must map hyper-parameters to values, got {point!r}")
        unknown = sorted(set(point) - set(defaults))
        if unknown:
            raise ConfigError(
                f"condition {name!r} sets {', '.join(unknown)}, which the run does not have; sweepable: "
                f"{', '.join(sorted(defaults))}"
            )
        out[name] = {k: float(point.get(k, defaults[k])) for k in defaults}
    return out


def compare(
    trainer,
    key,
    n_seeds: int,
    conditions: Mapping[str, Mapping[str, float]],
    *,
    baseline: str | None = None,
    metrics=DEFAULT_METRICS,
    teacher_run=None,
    legend: dict | None = None,
    **sweep_kwargs,
) -> Study:
    """Run every condition as one grid point of one sweep (seeds paired) and summarise with tests.

    ``baseline``: the condition the others are tested against (default: the
    first). ``metrics``: those tested (the ones the run records). A
    ``teacher_run`` (the teacher's :class:`SweepResult`) adds the teacher's
    rows and summary as a reference. ``legend``: what the report prints for
    each condition (default: the values the condition sets). ``sweep_kwargs`` go to
    :func:`jaxkd.sweep.run_sweep` (``chunk_steps``, ``checkpoint_dir``,
    ``resume``, ``progress``, ``desc`` ...).
    """
    from jaxkd.experiment import scope, teacher_summary
    from jaxkd.sweep import run_sweep

    filled = fill_conditions(trainer, conditions)
    names = list(filled)
    baseline = names[0] if baseline is None else baseline
    check(baseline in filled, f"baseline {baseline!r} is not a condition; conditions: {', '.join(names)}")
    grid = {k: [filled[c][k] for c in names] for k in filled[names[0]]}
    sweep_kwargs.setdefault("desc", "study")
    result = run_sweep(trainer, key, n_seeds, grid, names=names, **sweep_kwargs)
    rows = selected_records(result, names)
    shared = trainer.teacher is not None and not trainer.teacher.per_seed
    if legend is None:  # each condition's value of every hyper-parameter that some condition sets
        varied = list(dict.fromkeys(k for c in conditions.values() for k in c))
        legend = {n: {k: filled[n][k] for k in varied} for n in names}
    summary = {
        "conditions": results.summarize_sweep(result, names),
        "comparisons": compare_to_baseline(result, names, baseline, metrics),
        "legend": legend,
        "baseline": baseline,
        "teacher_live": trainer.teacher_live,
        "scope": scope(shared),
    }
    if teacher_run is not None:
        rows = selected_records(teacher_run, ["teacher"]) + rows
        summary = {"teacher": teacher_summary(teacher_run), **summary}
    return Study(result=result, conditions=filled, baseline=baseline, rows=rows, summary=summary)


def selected_records(result, names: list[str]) -> list[dict]:
    """:func:`jaxkd.results.records_from_sweep` with ``selected``: the run's validation-selected evaluation."""
    rows = results.records_from_sweep(result, names)
    pick = result.selected_index
    steps = result.steps
    chosen = {(s, n): int(steps[pick[s, g]]) for s in range(result.n_seeds) for g, n in enumerate(names)}
    for r in rows:
        r["selected"] = r["step"] == chosen[(r["seed"], r["condition"])]
    return rows


def compare_to_baseline(result, names: list[str], baseline: str, metrics) -> dict:
    """Paired t-tests of every condition against ``baseline`` (seeds paired), Holm-corrected per metric.

    Each metric is compared at the evaluation each run selected on the
    validation split (``selected``) and at the last one (``last``); effect
    size Cohen's d_z. Metrics the run does not record are skipped.
    """
    from jaxkd.experiment import label_test

    pick = result.selected_index
    b = names.index(baseline)
    out = {}
    for metric in metrics:
        if metric not in result.history:
            continue
        h = np.where(result.diverged[..., None], np.nan, result.history[metric])
        for when, vals in (("selected", np.take_along_axis(h, pick[..., None], -1)[..., 0]), ("last", h[..., -1])):
            tests = {
                f"{n} - {baseline}": label_test(
                    stats.paired_test(vals[:, g], vals[:, b]), metric, when, f"{n} - {baseline}"
                )
                for g, n in enumerate(names)
                if n != baseline
            }
            for t, p in zip(tests.values(), stats.holm([t["p"] for t in tests.values()])):
                t["p_holm"] = float(p)
            out.setdefault(metric, {})[when] = tests
    return out


def train_teacher(config, *, dataset=None, seed: int = 0, n_seeds: int = 1, progress: bool = True, **kwargs):
    """Train a teacher for a study: ``(Teacher, teacher_run)``, the validation-selected model of seed 0.

    ``config``: its :class:`jaxkd.config.RunConfig`; ``dataset``: default
    ``load_dataset(config.data.dataset)``. ``kwargs`` go to
    :func:`jaxkd.experiment.train_teacher` (``per_seed``, ``chunk_steps``,
    ``checkpoint_dir``, ``resume`` ...).
    """
    from jaxkd.data import load_dataset
    from jaxkd.experiment import train_teacher as train

    dataset = load_dataset(config.data.dataset) if dataset is None else dataset
    return train(config, dataset, jax.random.key(seed), n_seeds=n_seeds, progress=progress, **kwargs)


def run(
    config,
    conditions: Mapping[str, Mapping[str, float]],
    *,
    n_seeds: int = 8,
    seed: int = 0,
    dataset=None,
    teacher=None,
    teacher_run=None,
    baseline: str | None = None,
    metrics=DEFAULT_METRICS,
    out: str | None = None,
    progress: bool = True,
    **sweep_kwargs,
) -> Study:
    """Build the run of ``config`` (a :class:`jaxkd.config.RunConfig`), run ``conditions`` and, with ``out``,
    write the study there; returns the :class:`Study`.

    ``dataset``: default ``load_dataset(config.data.dataset)``. ``teacher``:
    a :class:`jaxkd.teacher.Teacher` for terms that need one (and its
    ``teacher_run`` from :func:`train_teacher`, for the teacher's row).
    Seed ``s`` of the study is ``split(key(seed), n_seeds)[s]``.
    """
    from jaxkd.data import load_dataset
    from jaxkd.train import make_train

    check(isinstance(n_seeds, int) and n_seeds > 0, f"n_seeds must be a positive integer, got {n_seeds}")
    if out is not None:  # before any training: a directory that cannot take the results is refused now
        from jaxkd.outputs import check_replaceable, check_writable

        check_writable(out)
        check_replaceable(out)
    dataset = load_dataset(config.data.dataset) if dataset is None else dataset
    trainer = make_train(config, dataset, teacher)
    key = jax.random.key(seed)
    s = compare(
        trainer,
        key,
        n_seeds,
        conditions,
        baseline=baseline,
        metrics=metrics,
        teacher_run=teacher_run,
        progress=progress,
        **sweep_kwargs,
    )
    if out is not None:
        record = {
            "run": dataclasses.asdict(config),
            "conditions": s.conditions,
            "baseline": s.baseline,
            "n_seeds": n_seeds,
            "seed": seed,
        }
        s.write(out, config=record)
    return s


def study_figure(s: Study, metric: str | None = None) -> bytes:
    """Each condition's ``metric`` (default test/acc, else the first test metric) at the selected evaluation
    (mean, 95% CI), and its validation curve (mean ± std over seeds)."""
    from jaxkd import plotting

    names = list(s.conditions)
    conds = s.summary["conditions"]
    tested = [m for m in s.result.history if m.startswith("test/")]
    metric = metric or ("test/acc" if "test/acc" in s.result.history else (tested or list(s.result.history))[0])
    fig, axes = plotting.figure(ncols=2, width=4.0)
    teacher = s.summary.get("teacher", {}).get(metric, {}).get("selected", {}).get("mean")
    plotting.points_with_ci(
        axes[0, 0],
        names,
        [conds[n][metric]["selected"] for n in names],
        ylabel=f"{metric} (mean, 95% CI)",
        reference=teacher,
        reference_label="teacher" if teacher is not None else None,
    )
    curve = "val/acc" if "val/acc" in s.result.history else metric
    ok = ~s.result.diverged
    plotting.curves_with_band(
        axes[0, 1],
        s.result.steps,
        {n: s.result.history[curve][ok[:, g], g] for g, n in enumerate(names)},
        ylabel=f"{curve} (mean ± std)",
    )
    fig.suptitle(f"{s.result.n_seeds} seeds per condition, paired; model chosen on validation", fontsize=8)
    return plotting.to_png(fig)
