"""Distillation methods on one footing, CNN → CNN on digits: CE, KD, DKD, DIST, FitNet and AT by default,
and every other method of RepDistiller's CIFAR-100 table by name (SP, CC, RKD, PKT, NST, FSP, FT, AB, CRD).

A CNN teacher is trained with augmentation; then ``n_seeds`` seeds of a
smaller CNN student are trained under every method in ONE compiled program
(the methods are grid points of one objective whose inactive terms have
weight 0). The teacher runs live inside the step on the same randomly
cropped batch as the student and hands over its logits and its stage
features (``block0``, ``block1``). Seed s shares its initialisation, data
order and augmentations across methods, so differences are paired.
Checkpoints are chosen on a validation split carved from the training data;
the test set is only measured.

Logit weights follow the peers (RepDistiller, mdistiller, DIST): KD is
0.1·CE + 0.9·KD (T = 4); DKD is CE + DKD (alpha 1, beta 8, T 4; no warm-up
ramp); DIST is CE + DIST (beta = gamma = 2, T = 4). The feature terms are
rescaled for 8x8 digits: FitNet is CE + 1·hint (student block1 → teacher
block1 through a learned 1x1 conv) and AT is CE + 50·AT (p = 2, both
stages). RepDistiller's 100 and 1000 are set for 32x32 CIFAR maps, whose
normalised attention maps have 16-64x more positions and so much smaller
per-position values; at weight 1000 here AT swamps CE (test accuracy 0.51
against 0.91 for CE in a 600-step run).

The other methods of RepDistiller's table (:mod:`jaxkd.peer_terms`) are in
the objective with RepDistiller's weights, not retuned for digits, and run
when named: ``--set methods=ce,kd,sp,cc,rkd,pkt,nst,ft,ab,crd`` (the
presets keep the six above, whose numbers the README quotes). SP and FT read
``block1``, NST and AB both blocks (AB the post-ReLU maps: ``cnn2d`` has no
pre-activation taps), CC, RKD, PKT and CRD the pooled vector (CRD's memory
has a row per training example). AB, FSP and FT start with RepDistiller's
init stage (the first eighth of the run: ``init_stage``); their grid points
train CE only after it. FSP compares the two networks' flow matrices
channel by channel, so it needs a student of the teacher's widths
(``--set model.widths=32,64``); at the default widths it is refused in one line.
At RepDistiller's weights, NST and FT cost this tiny student accuracy: one
run of the default preset with ``--seeds 2`` and every method but FSP
(commit ca6062f, 346 s on the shared 2-core CPU) gave test accuracy at the
selected step CE 0.940, SP 0.921, CC 0.936, RKD 0.950, PKT 0.948, NST 0.830,
FT 0.666, AB 0.886, CRD 0.890 (two seeds: an indication, not a ranking).

Command::

    jaxkd run digits_methods --preset default --out results/digits_methods/default

Expected runtime on a 2-core CPU: smoke ~1 min, default ~1 min (measured
68 s on an idle machine, a third of it XLA compiling), paper ~10 min. Output: config.json,
records.csv, summary.json (mean ± std and 95% CI over seeds at the
validation-selected and the last evaluation; paired t-tests of each method
against CE with Holm correction and Cohen's d_z), figure.png, env.json.

What it shows: each method's test accuracy at the validation-selected
evaluation against CE, paired over 8 seeds, with a 400-step budget at which
the tiny student is far from converged: single-budget numbers, not a ranking
of methods. The measured numbers are in the README ("What the demo shows",
section 2), regenerated from this preset's summary.json by ``make numbers``.
"""

from __future__ import annotations

import dataclasses

import jax

from jaxkd import peer_terms, plotting
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
from jaxkd.data import load_dataset
from jaxkd.errors import check
from jaxkd.experiment import TeacherStudentRuns, check_seeds_fit, method_conditions, run_methods, train_teacher
from jaxkd.models import make_model
from jaxkd.outputs import write_outputs
from jaxkd.recipes import RecipeConfig
from jaxkd.train import check_objective, make_train

METHODS = ("ce", "kd", "dkd", "dist", "fitnet", "at")
PEER_METHODS = ("sp", "cc", "rkd", "pkt", "nst", "fsp", "ft", "ab", "crd")

_OBJECTIVE = {
    "ce": {"weight": 1.0},
    "kd": {"weight": 0.9, "temperature": 4.0},
    "dkd": {"weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0},
    "dist": {"weight": 1.0, "beta": 2.0, "gamma": 2.0, "temperature": 4.0},
    "fitnet": {"weight": 1.0, "student": "block1", "teacher": "block1"},
    "at": {"weight": 50.0, "student": ("block0", "block1"), "teacher": ("block0", "block1")},
    # RepDistiller's -b for the rest of its table (jaxkd.peer_terms); FSP and AB weigh their init stage (1).
    "sp": {"weight": 3000.0, "student": "block1", "teacher": "block1"},
    "cc": {"weight": 0.02},
    "rkd": {"weight": 1.0},
    "pkt": {"weight": 30000.0},
    "nst": {"weight": 50.0, "student": ("block0", "block1"), "teacher": ("block0", "block1")},
    "fsp": {"weight": 1.0, "student": ("block0", "block1"), "teacher": ("block0", "block1")},
    "ft": {"weight": 200.0, "student": "block1", "teacher": "block1"},
    "ab": {"weight": 1.0, "student": ("block0", "block1"), "teacher": ("block0", "block1")},
    "crd": {"weight": 0.8},
}

FINGERPRINT = {"experiment": "digits_methods"}  # in every checkpoint: resuming another experiment is refused
MULTI_PROCESS = True  # runs over several processes (docs/distributed.md)


@dataclasses.dataclass(frozen=True)
class Config(TeacherStudentRuns):
    n_seeds: int = 8
    seed: int = 0
    data: DataConfig = DataConfig("digits", crop_padding=1)
    teacher_model: ModelConfig = ModelConfig("cnn2d", (32, 64))
    teacher_recipe: RecipeConfig = RecipeConfig(learning_rate=5e-3, steps=400)
    per_seed_teacher: bool = False  # True: student seed s distils from teacher seed s
    model: ModelConfig = ModelConfig("cnn2d", (8, 16))
    recipe: RecipeConfig = RecipeConfig(learning_rate=5e-3, steps=400)
    # Each method's term with the weight it gets when it is the active method.
    objective: ObjectiveConfig = ObjectiveConfig(_OBJECTIVE)
    kd_ce_weight: float = 0.1  # the CE weight in the kd condition (RepDistiller -r 0.1); 1 elsewhere
    methods: tuple[str, ...] = METHODS
    # (init stage, rest): AB, FSP and FT train RepDistiller's init stage first (its 30 of 30 + 240 epochs)
    init_stage: tuple[float, float] = peer_terms.INIT_PHASES
    eval: EvalConfig = EvalConfig(every=100)
    chunk_steps: int | None = None

    def __post_init__(self):
        check(self.n_seeds > 0, f"n_seeds must be positive, got {self.n_seeds}")
        check(
            len(self.init_stage) == 2 and min(self.init_stage) > 0,
            f"init_stage must be two positive ratios (init stage, rest), got {self.init_stage}",
        )
        check(self.methods and self.methods[0] == "ce", "methods must start with the baseline 'ce'")
        for m in self.methods:
            check(
                m in self.objective.terms,
                f"method {m!r} has no term in the objective; terms: {', '.join(self.objective.terms)}",
            )
        check(len(set(self.methods)) == len(self.methods), f"methods repeat a name: {self.methods}")
        check(0 <= self.kd_ce_weight, f"kd_ce_weight must be >= 0, got {self.kd_ce_weight}")
        self.teacher_config(), self.student_config()
        self.check_chunks()

    def student_config(self) -> RunConfig:
        """The students' run: the objective's terms of ``methods`` only, with the init stage of AB, FSP and FT."""
        terms = {k: v for k, v in self.objective.terms.items() if k in self.methods}
        terms = peer_terms.init_stage_objective(terms, phases=self.init_stage)
        return dataclasses.replace(super().student_config(), objective=ObjectiveConfig(terms))

    def conditions(self, objective: ObjectiveConfig | None = None) -> dict[str, dict[str, float]]:
        """Method -> grid point: its own term at its weight (plus CE), every other term at weight 0.

        AB, FSP and FT take CE from ``ce_main``, active after their init stage.
        """
        objective = objective or self.student_config().objective
        conds = method_conditions(objective, self.methods, kd_ce_weight=self.kd_ce_weight)
        return peer_terms.init_stage_conditions(conds, objective.terms)


PRESETS = {
    "smoke": Config(
        n_seeds=2,
        teacher_model=ModelConfig("cnn2d", (8, 16)),
        teacher_recipe=RecipeConfig(steps=40),
        model=ModelConfig("cnn2d", (4, 8)),
        recipe=RecipeConfig(steps=40),
        eval=EvalConfig(every=20),
    ),
    "default": Config(),
    "paper": Config(
        n_seeds=16,
        per_seed_teacher=True,
        teacher_recipe=RecipeConfig(learning_rate=5e-3, steps=1500),
        recipe=RecipeConfig(learning_rate=5e-3, steps=1500),
        chunk_steps=500,
    ),
}


def run(config: Config, out_dir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train the teacher(s) and every method's students; write results to ``out_dir``."""
    dataset = load_dataset(config.data.dataset)
    key_teacher, key_students = jax.random.split(jax.random.key(config.seed))
    ckpt = (lambda name: f"{out_dir}/checkpoints/{name}") if config.chunk_steps else (lambda name: None)
    trainer_cfg = config.student_config()
    requested = trainer_cfg.objective.terms
    if peer_terms.needs_run_sizes(requested):  # CRD's memory size, FT's init stage: from the run itself
        n, total, per_epoch = peer_terms.run_sizes(trainer_cfg, dataset)
        filled = peer_terms.fill_run_sizes(
            requested, num_train=n, total_steps=total, steps_per_epoch=per_epoch, phases=config.init_stage
        )
        trainer_cfg = dataclasses.replace(trainer_cfg, objective=ObjectiveConfig(filled))
    check_seeds_fit(trainer_cfg, dataset, config.n_seeds, len(config.methods))
    # Feature names and shapes are checked before the teacher trains (no FLOPs).
    check_objective(
        trainer_cfg,
        *(
            make_model(m.name, dataset.in_shape, dataset.num_classes, m.widths, m.dtype)
            for m in (config.model, config.teacher_model)
        ),
    )
    teacher, t_result = train_teacher(
        config.teacher_config(),
        dataset,
        key_teacher,
        n_seeds=config.n_seeds if config.per_seed_teacher else 1,
        per_seed=config.per_seed_teacher,
        chunk_steps=config.chunk_steps,
        checkpoint_dir=ckpt("teacher"),
        fingerprint=FINGERPRINT,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
    )
    trainer = make_train(trainer_cfg, dataset, teacher)
    peer_terms.check_run_sizes(requested, trainer_cfg.objective.terms, trainer, phases=config.init_stage)
    names = list(config.methods)
    result, rows, summary = run_methods(
        trainer,
        key_students,
        config.n_seeds,
        config.conditions(trainer_cfg.objective),
        t_result,
        chunk_steps=config.chunk_steps,
        checkpoint_dir=ckpt("students"),
        fingerprint=FINGERPRINT,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        desc="students",
    )
    figure = _figure(result, names, summary, dataset, config)
    write_outputs(out_dir, config=config, rows=rows, summary=summary, figures={"figure.png": figure})
    return summary


def _figure(result, names, summary, dataset, config) -> bytes:
    fig, axes = plotting.figure(ncols=3, width=3.8)
    conds = summary["conditions"]
    teacher_acc = summary["teacher"]["test/acc"]["selected"]["mean"]
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
        {n: result.history["val/acc"][ok[:, g], g] for g, n in enumerate(names)},
        ylabel="validation accuracy (mean ± std)",
    )
    t, s = config.teacher_model, config.model
    fig.suptitle(
        f"{dataset.name}, {t.name}{list(t.widths or [])} → {s.name}{list(s.widths or [])}, random crop "
        f"(pad {config.data.crop_padding}); {result.n_seeds} seeds per method, checkpoint chosen on "
        "validation",
        fontsize=8,
    )
    return plotting.to_png(fig)


def runlocal(config: Config) -> Config:
    """The same preset shrunk to a short CPU smoke run (small models, 2 evaluations)."""
    return dataclasses.replace(
        config,
        n_seeds=2,
        teacher_model=ModelConfig("cnn2d", (4, 8)),
        teacher_recipe=dataclasses.replace(config.teacher_recipe, steps=4),
        model=ModelConfig("cnn2d", (4, 4)),
        recipe=dataclasses.replace(config.recipe, steps=4),
        eval=EvalConfig(every=2),
        chunk_steps=2 if config.chunk_steps else None,
    )
