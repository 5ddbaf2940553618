"""Confusion Distillation (Kang & Kim 2026) against a CE baseline and label smoothing, seeds paired.

Three conditions are grid points of ONE compiled program per architecture,
so seed s shares its initialisation and data order across them and the
comparisons are paired:

- ``baseline``: CE.
- ``label_smoothing``: CE with PyTorch's label smoothing 0.1.
- ``cd``: Confusion Distillation (arXiv 2606.03052, docs/papers.md §3.3),
  teacher-free: alternating hard (CE) and soft phases; in a soft phase the
  loss is ``0.7·T²·KL(Q[y] ‖ softmax(z/T)) + 0.3·CE`` (T = 2) where ``Q`` is
  an EMA (μ = 0.9) of the model's own row-normalised confusion matrix,
  initialised to the label-smoothing matrix (ε = 0.1, the term's default
  ``smoothing``). The phase lengths are
  the paper's ratio (default 3:3:6:3:15, hard first) scaled to the run and
  rounded to whole epochs (to steps when the run has fewer epochs than the
  ratio's sum). ``Q`` is updated at every evaluation once the first hard
  phase is over (the paper: after each epoch e ≥ 30 of 300), from the
  student's predictions on ``confusion_split``.

``confusion_split="train"`` (default): the student's predictions on the whole
un-augmented training set, the examples it is trained on (docs/papers.md:
"compute CM on a held-out split of the training data, or on training
predictions"). The validation split is never the default: it selects the
reported checkpoint (``eval.select = "val/acc"``), and a target built from its
labels would make the selected numbers optimistic; ``"val"`` is refused while
``eval.select`` reads it. Once the model fits its training examples its
predictions on them are more accurate than held-out ones, so this ``Q`` is
expected to be closer to the identity (a weaker target) than one from
held-out data (not measured). ``"test"`` reproduces the official code, which builds the
target from the **test set's labels: test-label leakage**; it is refused
unless ``leak_test_labels=True``, and its results are marked
``"test_label_leakage": true`` in summary.json and are not a clean estimate
(``--set leak_test_labels=true --set confusion_split=test``, in that order:
each ``--set`` is validated as it is applied).
Accuracy is reported at the validation-selected evaluation (and the last);
the official code's test-selected "best" is not reported.

The phase schedule is an engine feature: any term takes the options
``phases`` (the ratios) and ``phase`` (``"soft"`` or ``"hard"``), and the
trainer multiplies its value by a 0/1 mask from a step counter kept in the
term's state (``jaxkd.terms.gate_by_phase``). Here the ``confusion`` term is
soft and a second CE term (``ce_hard``) hard. With
``ce`` 0.3, ``ce_hard`` 0.7 and ``confusion`` 0.7 the loss is CE in hard
phases and 0.3·CE + 0.7·CD in soft phases; baselines put weight 0 on both
gated terms.

Command::

    jaxkd run confusion_distillation --preset default --out results/confusion_distillation/default

Presets:

- ``smoke``: seconds.
- ``default``: offline, digits, cnn2d(4, 8), 16 seeds, 30 epochs (600
  steps at batch 64) of SGD with the WDSL recipe's shape (momentum 0.9,
  wd 5e-4, 1 warm-up epoch, x0.2 at 30/60/80 % of training; lr 0.05),
  evaluation every epoch; phases 3:3:6:3:15 = 3, 3, 6, 3, 15 epochs.
  ``Q`` from training predictions. Measured 2026-11-24: 45 s on an idle
  2-core CPU (2 min 5 s beside other jobs). Results in docs/wdsl.md,
  regenerated from this preset's summary.json by ``make numbers``. The width
  was narrowed after a first run at cnn2d(16, 32) with 8 seeds sat at
  digits' ceiling: one post-hoc choice, see docs/wdsl.md.
- ``paper``: CIFAR-100 (``jaxkd data prepare cifar100`` first), ResNet-18/34/50,
  the WDSL recipe for 200 epochs (SGD 0.1, batch 128, crop 4, flip, rotation
  15) with the 200-epoch schedule 3:3:3:3:8 (30, 30, 30, 30, 80 epochs), 5
  seeds; the shape of Table 2 (baseline vs CD-200); for an accelerator.
  Config only: exercised here through ``runlocal``.

Output: config.json, records.csv (one row per architecture, condition, seed,
metric and evaluation), summary.json (per architecture: each condition's
mean ± std and 95% CI at the validation-selected and last evaluation; paired
t-tests of label smoothing and CD against the baseline, Holm-corrected, with
Cohen's d_z; the phase boundaries; how far Q's rows are from summing to 1),
figure.png, env.json.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxkd import plotting
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
from jaxkd.data import load_dataset
from jaxkd.errors import check, check_name
from jaxkd.experiment import run_methods
from jaxkd.models import MODELS
from jaxkd.outputs import write_outputs
from jaxkd.recipes import RecipeConfig, recipe
from jaxkd.terms import CONFUSION_SPLITS, phase_boundaries
from jaxkd.train import make_train

CONDITIONS = ("baseline", "label_smoothing", "cd")
_WDSL = recipe("wdsl_cifar")

FINGERPRINT = {"experiment": "confusion_distillation"}  # in every checkpoint: resuming another experiment is refused


@dataclasses.dataclass(frozen=True)
class Config:
    n_seeds: int = 16
    seed: int = 0
    data: DataConfig = DataConfig("digits")
    archs: tuple[str, ...] = ("cnn2d",)  # one program per architecture
    widths: tuple[int, ...] | None = (4, 8)  # narrow: at (16, 32) digits sits at its ceiling (0.99)
    recipe: RecipeConfig = RecipeConfig(
        optimizer="momentum",
        learning_rate=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="multistep",
        milestones=(9, 18, 24),
        decay_rate=0.2,
        warmup=1.0,
        batch_size=64,
        steps=None,
        epochs=30,
    )
    label_smoothing: float = 0.1
    soft_weight: float = 0.7  # CD's KL weight in a soft phase
    ce_weight: float = 0.3  # CE's weight in a soft phase (1 in a hard phase)
    temperature: float = 2.0
    momentum: float = 0.9  # EMA of the confusion matrix
    phases: tuple[float, ...] = (3.0, 3.0, 6.0, 3.0, 15.0)  # hard, soft, hard, ... (ratios)
    confusion_split: str = "train"  # Q from training predictions; never the split that selects
    leak_test_labels: bool = False  # True allows confusion_split="test": the official code's leakage
    eval: EvalConfig = EvalConfig(every=None)
    chunk_steps: int | None = None

    def __post_init__(self):
        check(self.n_seeds >= 2, f"n_seeds must be at least 2 for paired tests, got {self.n_seeds}")
        check(self.archs and len(set(self.archs)) == len(self.archs), f"archs must be distinct names, got {self.archs}")
        for a in self.archs:
            check_name("model", a, MODELS)
        check_name("confusion_split", self.confusion_split, CONFUSION_SPLITS)
        check(
            self.confusion_split != "test" or self.leak_test_labels,
            "confusion_split='test' trains on the test set's labels (the official code's leakage); "
            "set leak_test_labels=True to reproduce it on purpose, or use confusion_split='train'",
        )
        check(
            self.eval.select is None or self.confusion_split != self.eval.select.split("/")[0],
            f"confusion_split={self.confusion_split!r} is the split eval.select ({self.eval.select!r}) reads: the "
            "target would see the labels that pick the checkpoint; use confusion_split='train'",
        )
        check(
            len(self.phases) >= 2 and all(p > 0 for p in self.phases),
            f"phases must be at least two positive ratios (hard, soft, ...), got {self.phases}",
        )
        check(
            0 <= self.soft_weight and 0 <= self.ce_weight <= 1,
            f"soft_weight must be >= 0 and ce_weight in [0, 1], got {self.soft_weight}, {self.ce_weight}",
        )
        check(0 <= self.label_smoothing < 1, f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        check(self.chunk_steps is None or self.chunk_steps > 0, f"chunk_steps must be positive, got {self.chunk_steps}")
        self.run_config(self.archs[0])

    @property
    def leaks_test_labels(self) -> bool:
        return self.confusion_split == "test"

    def objective(self) -> ObjectiveConfig:
        return ObjectiveConfig(
            {
                "ce": {"weight": 1.0, "label_smoothing": 0.0},
                "ce_hard": {"kind": "ce", "weight": 0.0, "phases": self.phases, "phase": "hard"},
                "confusion": {
                    "weight": 0.0,
                    "temperature": self.temperature,
                    "momentum": self.momentum,
                    "split": self.confusion_split,
                    "leak_test_labels": self.leak_test_labels,
                    "phases": self.phases,
                    "phase": "soft",  # its EMA starts learning with the first soft phase
                },
            }
        )

    def run_config(self, arch: str) -> RunConfig:
        return RunConfig(
            model=ModelConfig(arch, self.widths),
            objective=self.objective(),
            recipe=self.recipe,
            data=self.data,
            eval=self.eval,
        )

    def conditions(self) -> dict[str, dict[str, float]]:
        """Condition -> grid point (every gated and ungated weight, and CE's label smoothing)."""
        off = {"ce.weight": 1.0, "ce.label_smoothing": 0.0, "ce_hard.weight": 0.0, "confusion.weight": 0.0}
        return {
            "baseline": off,
            "label_smoothing": {**off, "ce.label_smoothing": self.label_smoothing},
            "cd": {
                **off,
                "ce.weight": self.ce_weight,
                "ce_hard.weight": 1.0 - self.ce_weight,
                "confusion.weight": self.soft_weight,
            },
        }


PRESETS = {
    "smoke": Config(
        n_seeds=2,
        widths=(4, 8),
        recipe=RecipeConfig(learning_rate=5e-3, batch_size=64, steps=None, epochs=3),
        phases=(1.0, 1.0, 1.0),
    ),
    "default": Config(),
    "paper": Config(
        n_seeds=5,
        data=DataConfig("tfds:cifar100", crop_padding=4, flip=True, rotation=15.0),
        archs=("resnet18", "resnet34", "resnet50"),
        widths=None,
        recipe=_WDSL,
        phases=(3.0, 3.0, 3.0, 3.0, 8.0),
    ),
}


def run(config: Config, out_dir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train every architecture's three conditions as one program each; write results to ``out_dir``."""
    dataset = load_dataset(config.data.dataset)
    names = list(CONDITIONS)
    conds = config.conditions()
    # Build (and so check) every architecture's trainer before any training.
    trainers = {a: make_train(config.run_config(a), dataset) for a in config.archs}
    keys = jax.random.split(jax.random.key(config.seed), len(config.archs))
    rows, summary, sweeps = (
        [],
        {"test_label_leakage": config.leaks_test_labels, "confusion_split": config.confusion_split, "archs": {}},
        {},
    )
    for key, arch in zip(keys, config.archs):
        trainer = trainers[arch]
        # The steps at which the gated terms' hard/soft segments change, as make_train computed them.
        bounds = phase_boundaries(config.phases, trainer.steps, trainer.steps_per_epoch)
        ckpt = f"{out_dir}/checkpoints/{arch}" if config.chunk_steps else None
        result, arch_rows, arch_summary = run_methods(
            trainer,
            key,
            config.n_seeds,
            conds,
            None,
            chunk_steps=config.chunk_steps,
            checkpoint_dir=ckpt,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            desc=arch,
            fingerprint={**FINGERPRINT, "phase_boundaries": bounds},
        )
        q = np.asarray(result.states.term_state["confusion"]["inner"]["Q"])  # [S, G, C, C]
        arch_summary["phases"] = {
            "ratios": list(config.phases),
            "boundaries_steps": bounds,
            "steps": trainer.steps,
            "steps_per_epoch": trainer.steps_per_epoch,
        }
        arch_summary["Q"] = {
            "row_sum_max_abs_dev": float(np.abs(q.sum(-1) - 1).max()),
            "min_entry": float(q.min()),
            "cd_mean_diagonal": float(np.diagonal(q[:, names.index("cd")], axis1=-2, axis2=-1).mean()),
        }
        arch_summary.pop("teacher_live", None)
        rows += [{"arch": arch, **r} for r in arch_rows]
        summary["archs"][arch] = arch_summary
        sweeps[arch] = result
    figure = _figure(sweeps, summary, names, config, dataset)
    write_outputs(out_dir, config=config, rows=rows, summary=summary, figures={"figure.png": figure})
    return summary


def _figure(sweeps, summary, names, config, dataset) -> bytes:
    archs = list(sweeps)
    fig, axes = plotting.figure(ncols=2 * len(archs), width=3.8)
    for i, arch in enumerate(archs):
        conds = summary["archs"][arch]["conditions"]
        plotting.points_with_ci(
            axes[0, 2 * i],
            names,
            [conds[n]["test/acc"]["selected"] for n in names],
            ylabel=f"{arch}: test accuracy (val-selected, 95% CI)",
        )
        result = sweeps[arch]
        ok = ~result.diverged
        plotting.curves_with_band(
            axes[0, 2 * i + 1],
            result.steps,
            {n: result.history["val/acc"][ok[:, g], g] for g, n in enumerate(names)},
            ylabel="validation accuracy (mean ± std)",
        )
        for b in summary["archs"][arch]["phases"]["boundaries_steps"]:
            axes[0, 2 * i + 1].axvline(b, color="0.8", lw=0.6)
    leak = " [Q from TEST labels: leakage]" if config.leaks_test_labels else ""
    fig.suptitle(
        f"{dataset.name}: baseline vs label smoothing {config.label_smoothing} vs CD "
        f"(phases {':'.join(f'{p:g}' for p in config.phases)}); {config.n_seeds} seeds, paired{leak}",
        fontsize=8,
    )
    return plotting.to_png(fig)


def runlocal(config: Config) -> Config:
    """Any preset shrunk to a CPU smoke run: digits, a tiny cnn2d, 2 seeds, 4 steps, the preset's phases."""
    return dataclasses.replace(
        config,
        n_seeds=2,
        data=DataConfig("digits"),
        archs=("cnn2d",),
        widths=(4, 4),
        recipe=RecipeConfig(learning_rate=5e-3, batch_size=64, steps=4),
        eval=EvalConfig(every=1),
        chunk_steps=2 if config.chunk_steps else None,
    )
