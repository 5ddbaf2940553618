"""SubDistill: distil a large teacher's subtask-relevant subspaces into a small student, against layer-wise baselines.

Chormai et al. (arXiv 2601.05913) distil a teacher trained on many classes
into a small student for a *subtask* of a few classes, matching at several
layers only the teacher directions that matter for the subtask decision
(``jaxkd.subspace``, the ``subdistill`` term). The claim under test:
SubDistill beats layer-wise baselines on the subtask, most clearly when
data is scarce.

Protocol: one teacher is trained on all classes (or loaded by path from a
saved teacher, content hash checked) and restricted to each superclass
subtask without retraining (its logits are the subtask's columns). For each
(subtask, training fraction) every policy is a grid point of ONE compiled
program (seed s shares its initialisation, data order and augmentations
across policies: paired comparisons):

* ``student``: CE alone; ``kd``: T² KL (T = 4) alone; ``student_kd``: both;
* ``fitnet``, ``at``, ``vid``, ``vkd``: KD plus the layer loss on every layer pair;
* ``subdistill_pca``, ``subdistill_prca_posdef``, ``subdistill_random``: KD
  plus SubDistill's layer loss (weight λ_layer = 100) with that basis.

As in the reference code, no policy with a layer loss uses labels (λ_task =
0). The training fraction is a stratified part of the subtask's training
split (fixed by ``fraction_seed``; the validation split is the same at every
fraction); each run keeps its validation-best evaluation. Paired t-tests of
``subdistill_prca_posdef`` against every other policy (Holm-corrected,
Cohen's d_z) on test accuracy. The rank-k diagnostic (``basis@k``): the
teacher's subtask accuracy with a layer replaced by its rank-k
reconstruction, per layer and basis, k = the paired student width.

Presets:

- ``smoke``: seconds; tiny models, few steps.
- ``default``: offline on a 2-core CPU: a ``cnn2d`` (32, 64, 128) teacher
  trained on all 100 classes of ``procedural16`` for 6000 steps, to a plateau
  of validation accuracy (no flips: mirrored stripes are another
  class of the same superclass), the superclass subtasks ``square`` and
  ``plus``, a small SubDistill student (``sdstudent`` widths 8-8-8-4),
  fractions 0.5 and 1, 8 seeds, 32 epochs per student at every fraction as
  in the paper's protocol (192 and 384 steps; AdamW 3e-3, batch 32, evaluated
  once per epoch). Runtime (about 14 minutes) and results in
  ``docs/subdistill.md``.
- ``paper``: CIFAR-100 superclass subtasks (``jaxkd data prepare cifar100``
  first): the CIFAR ResNet-18 layout as teacher (AdamW 1e-3, x0.5 every 25
  epochs, 100 epochs; or loaded by path), ``sdstudent_32_24_16_8``
  students with the same recipe, fractions 0.125-1, for an accelerator.

Command::

    jaxkd run subdistill --preset default

Output: config.json, records.csv (one row per subtask, fraction, policy,
seed and evaluation), summary.json (teacher; per subtask: the teacher's
subtask accuracy, the rank-k table, per fraction each policy's mean ± std
and CI and the paired tests, the pre-pass time), figure.png (subtask test
accuracy against training fraction per policy, CI bands), teacher/ (the
trained teacher) and students/<subtask>-f<fraction>/ (every policy's
students as one saved ensemble, for the explanations experiment).
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

from jaxkd import plotting, results, subspace
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
from jaxkd.data import load_dataset
from jaxkd.data.subtasks import superclass_classes, superclass_names
from jaxkd.ensemble import from_sweep, save_ensemble
from jaxkd.errors import check
from jaxkd.experiment import (
    check_seeds_fit,
    compare_to_baseline,
    scope,
    teacher_summary,
    train_teacher,
)
from jaxkd.models import make_model
from jaxkd.outputs import write_outputs
from jaxkd.recipes import RecipeConfig
from jaxkd.sweep import run_sweep
from jaxkd.teacher import load_teacher, save_teacher
from jaxkd.train import check_objective, check_teacher_normalisation, make_train

POLICIES = (
    "student",
    "kd",
    "student_kd",
    "fitnet",
    "at",
    "vid",
    "vkd",
    "subdistill_pca",
    "subdistill_prca_posdef",
    "subdistill_random",
)
BASELINE = "subdistill_prca_posdef"
LAYER_POLICIES = ("fitnet", "at", "vid", "vkd")
BASES = {"subdistill_pca": "pca", "subdistill_prca_posdef": "prca_posdef", "subdistill_random": "random"}

FINGERPRINT = {"experiment": "subdistill"}


@dataclasses.dataclass(frozen=True)
class Config:
    n_seeds: int = 8
    seed: int = 0
    data: DataConfig = DataConfig("procedural16", val_fraction=0.2, crop_padding=2)
    # Superclass subtasks (jaxkd.data.subtasks): 5 classes each.
    subtasks: tuple[str, ...] = ("square", "plus")
    fractions: tuple[float, ...] = (0.5, 1.0)
    fraction_seed: int = 0
    # Trained to a plateau of validation accuracy (docs/subdistill.md: 3000 / 6000 / 12000 steps give
    # 0.587 / 0.648 / 0.666 on all 100 classes); (16, 32, 64) for 1500 steps, the earlier teacher, gave 0.30.
    teacher_model: ModelConfig = ModelConfig("cnn2d", (32, 64, 128))
    teacher_recipe: RecipeConfig = RecipeConfig(
        optimizer="adam", learning_rate=3e-3, schedule="cosine", batch_size=128, steps=6000
    )
    # A teacher saved by an earlier run (OUT/teacher); empty: train one.
    teacher_path: str = ""
    model: ModelConfig = ModelConfig("sdstudent", (8, 8, 8, 4))
    # Layer pairs "student:teacher", shallow to deep.
    layers: tuple[str, ...] = ("stage1:block0", "stage2:block1", "stage3:block2")
    # Epochs, not steps, as in the paper's protocol (the same number of epochs at every fraction): 32 epochs are
    # 384 steps on a subtask's 400 training images and 192 on half of them; at a quarter (40 epochs, 120 steps)
    # no student learnt on this budget (docs/subdistill.md).
    recipe: RecipeConfig = RecipeConfig(optimizer="adamw", learning_rate=3e-3, batch_size=32, steps=None, epochs=32)
    temperature: float = 4.0
    # λ_layer of each layer policy (SubDistill's README: 100; RepDistiller: FitNet 100, AT 1000 at 32x32,
    # scaled by (H/32)² as in cifar_kd; VID and VkD 1).
    subdistill_weight: float = 100.0
    fitnet_weight: float = 100.0
    at_weight: float = 1000.0
    vid_weight: float = 1.0
    vkd_weight: float = 1.0
    positions: int = 20
    policies: tuple[str, ...] = POLICIES
    eval: EvalConfig = EvalConfig(every=None)  # the students': once per epoch
    teacher_eval: EvalConfig = EvalConfig(every=50)
    save_students: bool = True

    def __post_init__(self):
        check(self.n_seeds > 1, f"n_seeds must be at least 2 for paired tests, got {self.n_seeds}")
        check(self.subtasks, "subtasks must name at least one superclass")
        names = superclass_names(self.data.dataset)
        for s in self.subtasks:
            check(s in names, f"unknown {self.data.dataset} superclass {s!r}; choose from: {', '.join(names)}")
        check(len(set(self.subtasks)) == len(self.subtasks), f"subtasks repeat: {self.subtasks}")
        check(
            self.fractions and all(0 < f <= 1 for f in self.fractions),
            f"fractions must lie in (0, 1]: {self.fractions}",
        )
        check(list(self.fractions) == sorted(set(self.fractions)), f"fractions must increase: {self.fractions}")
        check(self.data.classes is None, "set the subtasks with subtasks=..., not data.classes")
        check(self.data.train_fraction == 1, "set the training fractions with fractions=..., not data.train_fraction")
        check(self.layers, "layers must pair at least one student and teacher feature")
        for pair in self.layers:
            check(pair.count(":") == 1, f"layer pair {pair!r} must read 'student:teacher', e.g. 'stage1:block0'")
        check(BASELINE in self.policies, f"policies must include {BASELINE}, the policy every test compares against")
        for p in self.policies:
            check(p in POLICIES, f"unknown policy {p!r}; choose from: {', '.join(POLICIES)}")
        check(len(set(self.policies)) == len(self.policies), f"policies repeat: {self.policies}")
        check(self.temperature > 0, f"temperature must be positive, got {self.temperature}")

    @property
    def pairs(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        s, t = zip(*(p.split(":") for p in self.layers))
        return tuple(s), tuple(t)

    def objective(self, image_size: int) -> ObjectiveConfig:
        """Every policy's terms (weights as in the policy that uses them); conditions switch them on."""
        s, t = self.pairs
        terms = {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": self.temperature}}
        used = set(self.policies)
        if "fitnet" in used:
            for i, (a, b) in enumerate(zip(s, t)):
                terms[f"fitnet{i}"] = {"kind": "fitnet", "weight": self.fitnet_weight, "student": a, "teacher": b}
        if "at" in used:
            terms["at"] = {"weight": self.at_weight * (image_size / 32) ** 2, "student": s, "teacher": t}
        if "vid" in used:
            terms["vid"] = {"weight": self.vid_weight, "student": s, "teacher": t}
        if "vkd" in used:
            terms["vkd"] = {"weight": self.vkd_weight, "student": s, "teacher": t}
        for policy, basis in BASES.items():
            if policy in used:
                terms[policy] = {
                    "kind": "subdistill",
                    "weight": self.subdistill_weight,
                    "student": s,
                    "teacher": t,
                    "basis": basis,
                    "positions": self.positions,
                    "seed": self.seed,
                }
        return ObjectiveConfig(terms)

    def conditions(self, objective: ObjectiveConfig) -> dict[str, dict[str, float]]:
        """Policy -> grid point: the weights of its terms, every other term at 0."""
        hp = objective.build()[1]
        names = list(objective.terms)
        out = {}
        for policy in self.policies:
            on = {
                "student": ["ce"],
                "kd": ["kd"],
                "student_kd": ["ce", "kd"],
            }.get(policy, ["kd"] + [n for n in names if n == policy or (policy == "fitnet" and n.startswith("fitnet"))])
            out[policy] = {f"{n}.weight": (hp[f"{n}.weight"] if n in on else 0.0) for n in names}
        return out

    def teacher_config(self) -> RunConfig:
        return RunConfig(model=self.teacher_model, recipe=self.teacher_recipe, data=self.data, eval=self.teacher_eval)

    def student_config(self, classes, fraction: float, image_size: int) -> RunConfig:
        data = dataclasses.replace(
            self.data, classes=tuple(classes), train_fraction=fraction, fraction_seed=self.fraction_seed
        )
        return RunConfig(
            model=self.model,
            objective=self.objective(image_size),
            recipe=self.recipe,
            data=data,
            eval=self.eval,
            teacher="live",
        )


_paper_recipe = RecipeConfig(
    optimizer="adamw",
    learning_rate=1e-3,
    schedule="multistep",
    milestones=(25, 50, 75),
    decay_rate=0.5,
    batch_size=64,
    steps=None,
    epochs=100,
)

PRESETS = {
    "smoke": Config(
        n_seeds=2,
        subtasks=("square",),
        fractions=(0.5, 1.0),
        teacher_model=ModelConfig("cnn2d", (8, 16, 16)),
        teacher_recipe=RecipeConfig(optimizer="adam", learning_rate=3e-3, batch_size=64, steps=8),
        model=ModelConfig("sdstudent", (8, 8, 4, 4)),
        recipe=RecipeConfig(optimizer="adamw", learning_rate=1e-3, batch_size=16, steps=8),
        positions=4,
        eval=EvalConfig(every=4),
        teacher_eval=EvalConfig(every=4),
    ),
    "default": Config(),
    "paper": Config(
        data=DataConfig("tfds:cifar100", val_fraction=0.2, crop_padding=4, flip=True),
        subtasks=("aquatic_mammals", "fish", "flowers", "people", "vehicles_1"),
        fractions=(0.125, 0.25, 0.5, 1.0),
        teacher_model=ModelConfig("resnet18"),
        teacher_recipe=_paper_recipe,
        model=ModelConfig("sdstudent_32_24_16_8"),
        layers=("stage1:stage1", "stage2:stage2", "stage3:stage3", "stage4:stage4"),
        recipe=_paper_recipe,
        eval=EvalConfig(every=None),
        teacher_eval=EvalConfig(every=None),
    ),
}


def run(config: Config, out_dir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Teacher (trained or loaded), then every (subtask, fraction) program of all policies; writes ``out_dir``."""
    started = time.perf_counter()
    dataset = load_dataset(config.data.dataset)
    check(len(dataset.in_shape) == 3, f"subdistill needs [H, W, C] images; {dataset.name} has {dataset.in_shape}")
    size = dataset.in_shape[0]
    t_cfg = config.teacher_config()
    t_model = make_model(t_cfg.model.name, dataset.in_shape, dataset.num_classes, t_cfg.model.widths)
    subtasks = {s: superclass_classes(config.data.dataset, s) for s in config.subtasks}
    for classes in subtasks.values():  # every check before any training
        s_cfg = config.student_config(classes, config.fractions[-1], size)
        s_model = make_model(s_cfg.model.name, dataset.in_shape, len(classes), s_cfg.model.widths)
        check_objective(s_cfg, s_model, t_model, classes)
        check_seeds_fit(s_cfg, dataset.subset_classes(classes), config.n_seeds, len(config.policies))
    loaded = load_teacher(config.teacher_path, t_model) if config.teacher_path else None
    if loaded is not None:
        check_teacher_normalisation(loaded, dataset.mean, dataset.std, dataset.name)
        check(loaded.classes is None, f"the teacher at {config.teacher_path} is a subtask teacher; load a full one")

    key = jax.random.key(config.seed)
    key_teacher, key_students = jax.random.split(key)
    summary: dict = {"scope": scope(True), "policies": list(config.policies), "baseline": BASELINE}
    if loaded is None:
        teacher, t_result = train_teacher(
            t_cfg, dataset, key_teacher, fingerprint=FINGERPRINT, overwrite=overwrite, progress=progress
        )
        save_teacher(
            os.path.join(out_dir, "teacher"),
            teacher,
            fingerprint=t_result.fingerprint,
            replace=overwrite,
            member={"model": "selected", "step": int(t_result.selected_steps[0, 0])},
        )
        summary["teacher"] = teacher_summary(t_result)
        rows = [{"subtask": "all", "fraction": 1.0, **r} for r in results.records_from_sweep(t_result, ["teacher"])]
    else:
        teacher, rows = loaded, []
        summary["teacher"] = {"path": os.path.abspath(config.teacher_path), "hash": loaded.content_hash()}

    summary["subtasks"] = {}
    prepass_seconds = 0.0
    for name, classes in subtasks.items():
        sub = {"classes": list(classes), "fractions": {}}
        for j, fraction in enumerate(config.fractions):
            s_cfg = config.student_config(classes, fraction, size)
            trainer = make_train(s_cfg, dataset, teacher)
            prepass_seconds += trainer.prepass_seconds
            if j == len(config.fractions) - 1:  # the teacher's subtask accuracy and the rank-k table (any fraction)
                sub["teacher"] = _teacher_on_subtask(trainer)
                sub["rank_k"] = _rank_k_table(trainer, config)
            conds = config.conditions(s_cfg.objective)
            names = list(conds)
            grid = {k: [conds[c][k] for c in names] for k in conds[names[0]]}
            result = run_sweep(
                trainer,
                jax.random.fold_in(key_students, j),
                config.n_seeds,
                grid,
                fingerprint=FINGERPRINT,
                overwrite=overwrite,
                progress=progress,
                desc=f"{name} f={fraction:g}",
            )
            rows += [{"subtask": name, "fraction": fraction, **r} for r in results.records_from_sweep(result, names)]
            sub["fractions"][str(fraction)] = {
                "num_train": trainer.num_train,
                "conditions": results.summarize_sweep(result, names),
                "comparisons": compare_to_baseline(result, names, BASELINE, ("test/acc", "test/agreement")),
                "prepass_seconds": round(trainer.prepass_seconds, 2),
            }
            if config.save_students:
                tag = f"{name}-f{fraction:g}"
                save_ensemble(
                    os.path.join(out_dir, "students", tag), from_sweep(result, trainer, names), replace=overwrite
                )
        summary["subtasks"][name] = sub
    total = time.perf_counter() - started
    summary["timing"] = {
        "total_seconds": round(total, 1),
        "prepass_seconds": round(prepass_seconds, 1),
        "prepass_share": round(prepass_seconds / total, 4),
    }
    write_outputs(out_dir, config=config, rows=rows, summary=summary, figures={"figure.png": _figure(summary, config)})
    return summary


def _teacher_on_subtask(trainer) -> dict:
    """The subtask teacher's accuracy on the subtask's validation and test splits (its cached logits)."""
    out = {}
    for split in ("val", "test"):
        logits = trainer.teacher_inputs["logits"][split]
        out[f"{split}/acc"] = float(np.mean(np.argmax(logits, -1) == np.asarray(trainer.data[f"y_{split}"])))
    return out


def _rank_k_table(trainer, config: Config) -> dict:
    """``basis@k`` per teacher layer and basis: the teacher's subtask test accuracy with the layer replaced by
    its rank-k reconstruction (k = the paired student width), and at full rank."""
    table = {}
    s_names, t_names = config.pairs
    s_spec = trainer.specs[0][1]
    for policy, basis in BASES.items():
        if policy not in trainer.constants:
            continue
        for a, b in zip(s_names, t_names):
            c = trainer.constants[policy][b]
            k = int(s_spec[a].shape[-1])
            row = table.setdefault(b, {"k": k, "d": int(c["U"].shape[0])})
            for label, u in ((basis, c["U"][:, :k]), (f"{basis}@full", c["U"])):
                row[label] = subspace.rank_k_accuracy(
                    trainer.teacher,
                    trainer.teacher.inputs,
                    trainer.data["x_test"],
                    trainer.data["y_test"],
                    b,
                    c["mu"],
                    u,
                    prepare=trainer.prepare,
                    batch_size=config.eval.batch_size,
                )
            row[f"{basis}/energy_share"] = float(np.sum(c["energies"][:k]) / np.sum(c["energies"]))
    return table


def _figure(summary, config) -> bytes:
    subtasks = list(summary["subtasks"])
    fig, axes = plotting.figure(ncols=len(subtasks), width=4.6, height=3.6)
    for ax, name in zip(axes[0], subtasks):
        sub = summary["subtasks"][name]
        fractions = [float(f) for f in sub["fractions"]]
        for policy in config.policies:
            stats = [sub["fractions"][f]["conditions"][policy]["test/acc"]["selected"] for f in sub["fractions"]]
            mean = np.array([s["mean"] for s in stats])
            lo = np.array([s["ci_low"] for s in stats])
            hi = np.array([s["ci_high"] for s in stats])
            style = "-" if policy.startswith("subdistill") else "--" if policy in LAYER_POLICIES else ":"
            width = 2.2 if policy == BASELINE else 1.1
            (line,) = ax.plot(fractions, mean, style, marker="o", ms=3, lw=width, label=policy)
            ax.fill_between(fractions, lo, hi, color=line.get_color(), alpha=0.12)
        ax.axhline(sub["teacher"]["test/acc"], color="k", lw=0.8, ls="-.", label="teacher (subtask)")
        ax.axhline(1 / len(sub["classes"]), color="0.5", lw=0.6, ls=":", label="chance")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(fractions)
        ax.set_xticklabels([f"{f:g}" for f in fractions])
        ax.set_xlabel("training fraction of the subtask")
        ax.set_ylabel("subtask test accuracy (mean, 95% CI)")
        ax.set_title(f"{name} {sub['classes']}", fontsize=9)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.suptitle(f"SubDistill on {config.data.dataset}: {config.n_seeds} paired seeds per policy", fontsize=8)
    return plotting.to_png(fig)


def runlocal(config: Config) -> Config:
    """Any preset shrunk to a CPU smoke run: tiny models on procedural16, one subtask, one fraction, every policy.

    The paper preset's wiring (ResNet-18 stages to the student's) is checked without training by
    ``check_objective`` in tests/test_subdistill.py.
    """
    small = RecipeConfig(optimizer="adamw", learning_rate=1e-3, batch_size=16, steps=4)
    return dataclasses.replace(
        config,
        n_seeds=2,
        data=DataConfig("procedural16", val_fraction=0.2, crop_padding=2),
        subtasks=("square",),
        fractions=(0.5,),
        teacher_model=ModelConfig("cnn2d", (8, 16, 16)),
        teacher_recipe=RecipeConfig(optimizer="adam", learning_rate=3e-3, batch_size=64, steps=4),
        teacher_path="",
        model=ModelConfig("sdstudent", (8, 8, 4, 4)),
        layers=("stage1:block0", "stage2:block1", "stage3:block2"),
        recipe=small,
        positions=4,
        eval=EvalConfig(every=2),
        teacher_eval=EvalConfig(every=2),
    )
