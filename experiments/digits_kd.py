"""Logit KD on a small dataset: does a small student gain from a teacher's soft labels?

A wide MLP teacher is trained once; then ``n_seeds`` seeds of a narrow
student are trained in ONE compiled program under every condition:
``ce`` (from scratch, alpha = 0), ``kd`` (alpha, T) and ``kd_T{t}`` for each
temperature in ``temperature_grid``. Seed s shares its initialisation and
data order across conditions, so differences are paired.

Command (default preset, what ``make demo`` runs)::

    jaxkd run digits_kd --preset default --out results/digits_kd

Expected runtime on a 2-core CPU: smoke ~15 s, default ~30 s, paper a few
minutes. Output: config.json, records.csv, summary.json (mean ± std and 95%
CI over seeds at the validation-selected and the last evaluation; paired
tests of each KD condition against ``ce`` with Holm correction and Cohen's
d_z), figure.png, env.json.

What it shows: whether KD at each temperature beats training this student
from scratch, as paired differences with Holm-corrected p-values. The measured
numbers are in the README ("What the demo shows", section 1), regenerated from
this preset's summary.json by ``make numbers``.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxkd import plotting
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig
from jaxkd.data import load_dataset
from jaxkd.errors import check
from jaxkd.experiment import TeacherStudentRuns, check_seeds_fit, run_methods, train_teacher
from jaxkd.outputs import write_outputs
from jaxkd.recipes import RecipeConfig
from jaxkd.train import make_train

FINGERPRINT = {"experiment": "digits_kd"}  # in every checkpoint: resuming another experiment is refused
MULTI_PROCESS = True  # runs over several processes (docs/distributed.md)


@dataclasses.dataclass(frozen=True)
class Config(TeacherStudentRuns):
    n_seeds: int = 16
    seed: int = 0
    data: DataConfig = DataConfig("digits")
    teacher_model: ModelConfig = ModelConfig("mlp", (256, 256))
    teacher_recipe: RecipeConfig = RecipeConfig(learning_rate=2e-3, steps=1500)
    model: ModelConfig = ModelConfig("mlp", (16,))
    recipe: RecipeConfig = RecipeConfig(learning_rate=2e-3, steps=1500)
    # The ``kd`` condition: RepDistiller's -r 0.1 -a 0.9 with T = 4.
    objective: ObjectiveConfig = ObjectiveConfig({"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}})
    eval: EvalConfig = EvalConfig(every=100)
    temperature_grid: tuple[float, ...] = (1.0, 2.0, 8.0)
    chunk_steps: int | None = None

    def __post_init__(self):
        check(self.n_seeds > 0, f"n_seeds must be positive, got {self.n_seeds}")
        check(
            set(self.objective.terms) == {"ce", "kd"},
            f"digits_kd's objective has exactly the terms ce and kd, got {', '.join(self.objective.terms)}",
        )
        t0 = self.objective.build()[1]["kd.temperature"]
        temps = [t0, *self.temperature_grid]
        check(
            len(set(temps)) == len(temps),
            f"temperature_grid {self.temperature_grid} repeats a temperature (the kd condition uses T={t0:g})",
        )
        for t in self.temperature_grid:
            check(t > 0 and np.isfinite(t), f"temperature_grid values must be positive and finite, got {t:g}")
        self.teacher_config(), self.student_config()
        self.check_chunks()

    def conditions(self) -> dict[str, dict[str, float]]:
        """Condition name -> the grid point it trains with."""
        hp = self.objective.build()[1]
        kd = {"ce.weight": hp["ce.weight"], "kd.weight": hp["kd.weight"], "kd.temperature": hp["kd.temperature"]}
        conds = {"ce": {"ce.weight": 1.0, "kd.weight": 0.0, "kd.temperature": hp["kd.temperature"]}, "kd": kd}
        for t in self.temperature_grid:
            conds[f"kd_T{t:g}"] = {**kd, "kd.temperature": float(t)}
        return conds


PRESETS = {
    "smoke": Config(
        n_seeds=2,
        teacher_model=ModelConfig("mlp", (32,)),
        teacher_recipe=RecipeConfig(steps=40),
        recipe=RecipeConfig(steps=40),
        eval=EvalConfig(every=20),
        temperature_grid=(2.0,),
    ),
    "default": Config(),
    "paper": Config(
        n_seeds=32,
        teacher_recipe=RecipeConfig(learning_rate=2e-3, steps=3000),
        recipe=RecipeConfig(learning_rate=2e-3, steps=3000),
        chunk_steps=1000,
        temperature_grid=(1.0, 2.0, 8.0, 16.0),
    ),
}


def run(config: Config, out_dir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train teacher and students, write results to ``out_dir``; returns the summary."""
    dataset = load_dataset(config.data.dataset)
    key_teacher, key_students = jax.random.split(jax.random.key(config.seed))
    ckpt = (lambda name: f"{out_dir}/checkpoints/{name}") if config.chunk_steps else (lambda name: None)
    student_cfg = config.student_config()
    check_seeds_fit(student_cfg, dataset, config.n_seeds, len(config.conditions()))
    teacher, t_result = train_teacher(
        config.teacher_config(),
        dataset,
        key_teacher,
        chunk_steps=config.chunk_steps,
        checkpoint_dir=ckpt("teacher"),
        fingerprint=FINGERPRINT,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
    )
    trainer = make_train(student_cfg, dataset, teacher)
    conds = config.conditions()
    names = list(conds)
    result, rows, summary = run_methods(
        trainer,
        key_students,
        config.n_seeds,
        conds,
        t_result,
        chunk_steps=config.chunk_steps,
        checkpoint_dir=ckpt("students"),
        fingerprint=FINGERPRINT,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        desc="students",
    )
    summary["legend"] = {n: _label(conds[n]) for n in names}
    teacher_acc = summary["teacher"]["test/acc"]["selected"]["mean"]
    figure = _figure(result, names, summary, teacher_acc, dataset)
    write_outputs(out_dir, config=config, rows=rows, summary=summary, figures={"figure.png": figure})
    return summary


def _label(point: dict) -> str:
    if point["kd.weight"] == 0:
        return "CE only"
    return f"{point['ce.weight']:g}·CE + {point['kd.weight']:g}·KD, T={point['kd.temperature']:g}"


def _figure(result, names, summary, teacher_acc, dataset) -> bytes:
    fig, axes = plotting.figure(ncols=3, width=3.8)
    conds = summary["conditions"]
    plotting.points_with_ci(
        axes[0, 0],
        names,
        [conds[n]["test/acc"]["selected"] for n in names],
        ylabel="test accuracy\n(mean, 95% CI)",
        reference=teacher_acc,
        reference_label="teacher",
    )
    plotting.points_with_ci(
        axes[0, 1],
        names,
        [conds[n]["test/agreement"]["selected"] for n in names],
        ylabel="test agreement with teacher\n(mean, 95% CI)",
    )
    ok = ~result.diverged
    plotting.curves_with_band(
        axes[0, 2],
        result.steps,
        {n: result.history["test/acc"][ok[:, g], g] for g, n in enumerate(names) if n in ("ce", "kd")},
        ylabel="test accuracy\n(mean ± std over seeds)",
    )
    fig.suptitle(
        f"{dataset.name}: {result.n_seeds} seeds per condition, checkpoint chosen on validation; "
        f"kd = {summary['legend'].get('kd', '')}",
        fontsize=8,
    )
    return plotting.to_png(fig)


def runlocal(config: Config) -> Config:
    """The same preset shrunk to a seconds-long CPU smoke run (1–2 evaluations)."""
    return dataclasses.replace(
        config,
        n_seeds=2,
        teacher_model=ModelConfig("mlp", (8,)),
        teacher_recipe=dataclasses.replace(config.teacher_recipe, steps=4),
        recipe=dataclasses.replace(config.recipe, steps=4),
        eval=EvalConfig(every=2),
        chunk_steps=2 if config.chunk_steps else None,
    )
