"""Logit KD on a small dataset: does a small student gain from a teacher's soft labels?

A wide MLP teacher is trained once; then ``n_seeds`` seeds of a narrow
student are trained in ONE compiled program under every condition:
``ce`` (from scratch, alpha = 0), ``kd`` (alpha, T) and ``kd_T{t}`` for each
temperature in ``temperature_grid``. Seed s shares its initialisation and
data order across conditions, so differences are paired.

Command (default preset, what ``make demo`` runs)::

    jaxkd run digits_kd --preset default --out results/digits_kd

Expected runtime on a 2-core CPU: smoke ~10 s, default ~40 s, paper a few
minutes. Output: config.json, records.csv, summary.json (mean ± std and 95%
CI over seeds, last and best evaluation; paired tests of each KD condition
against ``ce`` with Holm correction), figure.png, env.json.

What it shows: on digits, KD students reach a higher test accuracy and a much
higher agreement with the teacher than students trained from scratch; the
temperature grid shows how the gain depends on T.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxkd import plotting, results, stats
from jaxkd.data import check_dataset_name, load_dataset
from jaxkd.errors import check
from jaxkd.experiment import train_teacher, write_outputs
from jaxkd.models import MODELS
from jaxkd.sweep import run_sweep
from jaxkd.train import Teacher, TrainConfig, check_hparams, make_train


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "digits"
    n_seeds: int = 16
    seed: int = 0
    # teacher
    teacher_model: str = "mlp"
    teacher_widths: tuple[int, ...] = (256, 256)
    teacher_steps: int = 1500
    # student
    student_model: str = "mlp"
    student_widths: tuple[int, ...] = (16,)
    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 2e-3
    eval_every: int = 100
    chunk_steps: int | None = None
    # distillation
    loss: str = "kd"  # student objective, a name in jaxkd.losses.OBJECTIVES
    alpha: float = 0.9
    temperature: float = 4.0
    temperature_grid: tuple[float, ...] = (1.0, 2.0, 8.0)

    def __post_init__(self):
        check_dataset_name(self.dataset)
        for m in (self.teacher_model, self.student_model):
            check(m in MODELS, f"unknown model {m!r}; choose one of: {', '.join(sorted(MODELS))}")
        check(self.n_seeds > 0, f"n_seeds must be positive, got {self.n_seeds}")
        check_hparams({"alpha": self.alpha, "temperature": [self.temperature, *self.temperature_grid],
                       "learning_rate": self.learning_rate})
        self.student_config()  # validates steps / eval_every / batch size
        self.teacher_config()

    def teacher_config(self) -> TrainConfig:
        return TrainConfig(model=self.teacher_model, widths=self.teacher_widths, steps=self.teacher_steps,
                           batch_size=self.batch_size, learning_rate=self.learning_rate,
                           eval_every=self.eval_every)

    def student_config(self) -> TrainConfig:
        return TrainConfig(model=self.student_model, widths=self.student_widths, steps=self.steps,
                           batch_size=self.batch_size, learning_rate=self.learning_rate,
                           eval_every=self.eval_every, alpha=self.alpha, temperature=self.temperature,
                           loss=self.loss)

    def conditions(self) -> dict[str, dict[str, float]]:
        """Condition name -> the (alpha, temperature) grid point it trains with."""
        conds = {"ce": {"alpha": 0.0, "temperature": 1.0},
                 "kd": {"alpha": self.alpha, "temperature": self.temperature}}
        for t in self.temperature_grid:
            conds[f"kd_T{t:g}"] = {"alpha": self.alpha, "temperature": t}
        return conds


PRESETS = {
    "smoke": Config(n_seeds=2, teacher_widths=(32,), teacher_steps=40, steps=40, eval_every=20,
                    temperature_grid=(2.0,)),
    "default": Config(),
    "paper": Config(n_seeds=32, teacher_steps=3000, steps=3000, chunk_steps=1000,
                    temperature_grid=(1.0, 2.0, 8.0, 16.0)),
}


def run(config: Config, out_dir: str, *, resume: bool = False, progress: bool = True) -> dict:
    """Train teacher and students, write results to ``out_dir``; returns the summary."""
    dataset = load_dataset(config.dataset)
    key_teacher, key_students = jax.random.split(jax.random.key(config.seed))
    ckpt = (lambda name: f"{out_dir}/checkpoints/{name}") if config.chunk_steps else (lambda name: None)

    teacher, t_result = train_teacher(config.teacher_config(), dataset, key_teacher, chunk_steps=config.chunk_steps,
                                      checkpoint_dir=ckpt("teacher"), resume=resume, progress=progress)
    trainer = make_train(config.student_config(), dataset, teacher)
    conds = config.conditions()
    names = list(conds)
    grid = {k: [conds[c][k] for c in names] for k in ("alpha", "temperature")}
    result = run_sweep(trainer, key_students, config.n_seeds, grid, chunk_steps=config.chunk_steps,
                       checkpoint_dir=ckpt("students"), resume=resume, progress=progress, desc="students")

    rows = results.records_from_sweep(t_result, ["teacher"]) + results.records_from_sweep(result, names)
    summary = {"teacher": results.summarize_sweep(t_result, ["teacher"])["teacher"],
               "conditions": results.summarize_sweep(result, names),
               "comparisons": _compare(result, names)}
    figure = _figure(result, names, summary, _teacher_acc(teacher, dataset))
    write_outputs(out_dir, config=config, rows=rows, summary=summary, figures={"figure.png": figure})
    return summary


def _teacher_acc(teacher: Teacher, dataset) -> float:
    return float(np.mean(np.argmax(teacher.logits_test, -1) == dataset.y_test))


def _compare(result, names) -> dict:
    """Paired tests of each KD condition against ``ce`` (last evaluation), Holm-corrected per metric."""
    out = {}
    for metric in ("test/acc", "test/agreement"):
        base = result.history[metric][:, names.index("ce"), -1]
        base = np.where(result.diverged[:, names.index("ce")], np.nan, base)
        tests = {}
        for g, name in enumerate(names):
            if name == "ce":
                continue
            vals = np.where(result.diverged[:, g], np.nan, result.history[metric][:, g, -1])
            tests[f"{name} - ce"] = stats.paired_test(vals, base)
        adj = stats.holm([t["p"] if np.isfinite(t["p"]) else 1.0 for t in tests.values()])
        for t, p in zip(tests.values(), adj):
            t["p_holm"] = float(p)
        out[metric] = tests
    return out


def _figure(result, names, summary, teacher_acc) -> bytes:
    fig, axes = plotting.figure(ncols=3, width=3.8)
    conds = summary["conditions"]
    plotting.bar_with_ci(axes[0, 0], names, [conds[n]["test/acc"]["last"] for n in names],
                         ylabel="test accuracy (mean, 95% CI)", reference=teacher_acc, reference_label="teacher")
    plotting.bar_with_ci(axes[0, 1], names, [conds[n]["test/agreement"]["last"] for n in names],
                         ylabel="test agreement with teacher")
    ok = ~result.diverged
    plotting.curves_with_band(
        axes[0, 2], result.steps,
        {n: result.history["test/acc"][ok[:, g], g] for g, n in enumerate(names) if n in ("ce", "kd")},
        ylabel="test accuracy (mean ± std)")
    fig.suptitle(f"{result.n_seeds} seeds per condition, one compiled sweep", fontsize=9)
    return plotting.to_png(fig)


def runlocal(config: Config) -> Config:
    """The same preset shrunk to a seconds-long CPU smoke run (1–2 steps per evaluation)."""
    return dataclasses.replace(config, n_seeds=2, teacher_widths=(8,), teacher_steps=2, steps=2, eval_every=1,
                               batch_size=16, chunk_steps=1 if config.chunk_steps else None)
