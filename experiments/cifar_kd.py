"""The CIFAR KD table: CE, KD, DKD, DIST, FitNet, AT and the rest of RepDistiller's methods for zoo pairs.

For each architecture pair a teacher is trained (or loaded by path from a
saved ensemble, whose content hash is checked), then ``n_seeds`` students are
trained under every method as grid points of ONE compiled program: seed s
shares its initialisation, data order and augmentations across methods, so
the comparisons are paired (t-tests against CE, Holm-corrected, Cohen's
d_z). The teacher runs live inside the step on the same augmented batch and
hands over its logits and stage features. Checkpoints are selected on a
validation split carved from the training data; the test set is only
measured. Each trained teacher is saved under ``OUT/teachers/<pair>`` for
reuse (``--set teacher_paths=OUT/teachers/<pair>``).

Weights follow the peers (see ``docs/cifar.md`` and ``../shared`` peers):
KD 0.1·CE + 0.9·KD (T 4); DKD CE + DKD (alpha 1, beta 8, T 4, weight ramped
over the first 1/12 of training as mdistiller's 20 of 240 epochs); DIST CE +
DIST (beta = gamma = 2, T 4); FitNet CE + 100·hint (the middle stage through
a learned 1x1 conv); AT CE + 1000·AT (p 2, every stage). AT's weight is
scaled by (H/32)² for smaller images, whose normalised maps have fewer
positions and so larger per-position values. The CPU presets ramp AT's
weight as DKD's and DIST's over the first quarter (``ramped``,
``ramp_fraction``): at full weight from the first step, AT stayed near
chance in two of four seeds of the default run and DIST in one; the ``paper`` preset ramps DKD
only, as the peers do. The rest of RepDistiller's
table (:mod:`jaxkd.peer_terms`, its taps and ``-b`` weights, all with CE
weight 1): SP 3000 (last stage map), CC 0.02 (128-d embeddings of the
pooled vector), RKD 1 (distance 25, angle 50), PKT 30000, NST 50 (AT's
stages), FSP (stem and stages; needs equal stage widths), FT 200 (last
stage), AB (stage pre-activations), CRD 0.8 (128-d, 16384 negatives, T
0.07, momentum 0.5). AB, FSP and FT train RepDistiller's init stage first,
in the first eighth of the run (``init_stage``: its 30 init epochs taken
out of the 240), with CE only after it. Methods are named in ``methods``:
``default`` and ``smoke`` keep the six above; ``paper`` runs all sixteen (VID included).

Presets:

- ``smoke``: seconds; the default pair shrunk, a few steps.
- ``default``: offline on a 2-core CPU, on the procedural CIFAR-shaped task
  at 16x16 (``procedural16``, docs/procedural.md), its first 10 classes (two
  silhouettes x five textures): resnet20 → resnet8 at reduced widths, 4
  seeds, teacher 3200 steps (228 epochs of the 900 training images), students
  2400; random crop 2 and no flips (the procedural classes are not
  flip-invariant: stripes at 45° and 135° are both fine classes of a
  superclass, refused by ``DataConfig``). The budgets were chosen by doubling
  until the validation accuracy stopped rising much (docs/cifar.md: teacher
  test accuracy 0.72 / 0.80 / 0.85 at 800 / 1600 / 3200 steps; CE and KD
  students 0.25 / 0.75 / 0.78 and 0.53 / 0.78 / 0.84 at 300 / 1200 / 2400
  steps, all from the 800-step teacher).
  About 10 minutes on an idle 2-core CPU. Its numbers are in the README
  ("CIFAR-scale distillation") and docs/cifar.md, regenerated from this
  preset's summary.json by ``make numbers``. The peers' lr 0.05 is kept (a
  2026-11-24 run at 0.1 diverged FitNet in every seed).
- ``capacity``: offline, the capacity check of docs/procedural.md on all 100
  ``procedural16`` classes: a cnn2d teacher at widths (32, 64, 128) (107k
  parameters) against cnn2d students at (16, 32, 64) (30k) trained from scratch
  (CE) and distilled (KD), 4 seeds; Adam 3e-3, cosine, batch 128, 6000 steps
  for both (docs/procedural.md's recipe; the RepDistiller SGD recipe left a
  resnet32 teacher at 9 % after 1500 steps, below its resnet8 students' 19 %).
  About 10 minutes on the 2-core CPU. ``jaxkd run cifar_kd --preset capacity``
  writes ``results/cifar_kd/capacity``.
- ``paper``: CIFAR-100 (``jaxkd data prepare cifar100`` first), the RepDistiller
  recipe (240 epochs, SGD 0.05, momentum 0.9, wd 5e-4, x0.1 at 150/180/210,
  batch 64, crop 4 + flip) for resnet32x4 → resnet8x4, wrn_40_2 → wrn_16_2 and
  vgg13 → vgg8, every method of RepDistiller's table; for an accelerator. From XLA's FLOP count (2.97 GFLOP per
  training image for resnet32x4 → resnet8x4: teacher forward + student
  step), 240 epochs are about 81 s per seed at 40% of an H100's bf16 peak: a
  lower bound, not a measurement (benchmarks/cnn_sweep.py).

Command::

    jaxkd run cifar_kd --preset default

Output: config.json, records.csv (one row per seed, method and evaluation),
summary.json (per pair: teacher, each method's mean ± std and 95% CI at the
validation-selected and the last evaluation, paired tests), figure.png,
env.json, teachers/.
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax

from jaxkd import peer_terms, plotting
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
from jaxkd.data import load_dataset
from jaxkd.errors import ConfigError, check
from jaxkd.experiment import TeacherStudentRuns, check_seeds_fit, method_conditions, run_methods, train_teacher
from jaxkd.models import MODELS, make_model
from jaxkd.models.layers import direct_convolutions
from jaxkd.outputs import write_outputs
from jaxkd.recipes import RecipeConfig, recipe
from jaxkd.teacher import load_teacher, save_teacher
from jaxkd.train import check_objective, check_teacher_normalisation, make_train

METHODS = ("ce", "kd", "dkd", "dist", "fitnet", "at")
PEER_METHODS = ("sp", "cc", "rkd", "pkt", "nst", "fsp", "ft", "ab", "crd", "vid")

# Feature names ("auto") are filled in per pair: the hint is the middle stage, AT reads every stage.
# The FitNet regressor is RepDistiller's ConvReg (conv, BN, ReLU); for a ViT teacher, whose tokens are
# signed, set objective.fitnet.regressor=conv_bn.
_OBJECTIVE = {
    "ce": {"weight": 1.0},
    "kd": {"weight": 0.9, "temperature": 4.0},
    "dkd": {"weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0},
    "dist": {"weight": 1.0, "beta": 2.0, "gamma": 2.0, "temperature": 4.0},
    "fitnet": {"weight": 100.0, "student": "auto", "teacher": "auto", "regressor": "conv_bn_relu"},
    "at": {"weight": 1000.0, "student": "auto", "teacher": "auto"},
    # RepDistiller's -b (jaxkd.peer_terms); FSP and AB weigh their init stage, which RepDistiller leaves unweighted.
    "sp": {"weight": 3000.0, "student": "auto", "teacher": "auto"},
    "cc": {"weight": 0.02},
    "rkd": {"weight": 1.0},
    "pkt": {"weight": 30000.0},
    "nst": {"weight": 50.0, "student": "auto", "teacher": "auto"},
    "fsp": {"weight": 1.0, "student": "auto", "teacher": "auto"},
    "ft": {"weight": 200.0, "student": "auto", "teacher": "auto"},
    "ab": {"weight": 1.0, "student": "auto", "teacher": "auto"},
    "crd": {"weight": 0.8},
    "vid": {"weight": 1.0, "student": "auto", "teacher": "auto"},  # RepDistiller: -b 1 on feat[1:-1]
}

_RD = recipe("repdistiller_cifar")

FINGERPRINT = {"experiment": "cifar_kd"}  # in every checkpoint: resuming another experiment is refused


@dataclasses.dataclass(frozen=True)
class Config(TeacherStudentRuns):
    n_seeds: int = 4
    seed: int = 0
    # No flips: procedural classes are not flip-invariant (jaxkd.data.AUGMENTATION_LIMITS).
    data: DataConfig = DataConfig("procedural16", crop_padding=2)
    # Keep only the first N classes (None: all); procedural classes 5s..5s+4 share superclass s.
    classes: int | None = 10
    # "teacher:student" registry names; one program per pair.
    pairs: tuple[str, ...] = ("resnet20:resnet8",)
    teacher_widths: tuple[int, ...] | None = (8, 8, 16, 32)
    student_widths: tuple[int, ...] | None = (4, 4, 8, 16)
    dtype: str = "float32"
    # Saved teachers (one ensemble directory per pair, from an earlier run's OUT/teachers/<pair>); empty: train.
    teacher_paths: tuple[str, ...] = ()
    teacher_recipe: RecipeConfig = RecipeConfig(
        optimizer="momentum",
        learning_rate=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="cosine",
        batch_size=64,
        steps=3200,
    )
    recipe: RecipeConfig = RecipeConfig(
        optimizer="momentum",
        learning_rate=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="cosine",
        batch_size=64,
        steps=2400,
    )
    objective: ObjectiveConfig = ObjectiveConfig(_OBJECTIVE)
    kd_ce_weight: float = 0.1  # CE's weight in the kd condition (RepDistiller -r 0.1); 1 elsewhere
    # Terms whose weight grows linearly from 0 over the first ramp_fraction of training (mdistiller's DKD warm-up:
    # 20 of 240 epochs), or over their own fraction ("name:fraction"). The CPU default also ramps AT and DIST: at
    # full weight from step 0, three of their eight seeds stayed near chance, and DIST needed a quarter of
    # the run (docs/cifar.md); the paper preset ramps DKD only, as the peers do.
    ramped: tuple[str, ...] = ("dkd", "at", "dist:0.25")
    ramp_fraction: float = 1 / 12
    methods: tuple[str, ...] = METHODS
    # (init stage, rest): AB, FSP and FT train RepDistiller's init stage first (its 30 of 30 + 240 epochs)
    init_stage: tuple[float, float] = peer_terms.INIT_PHASES
    eval: EvalConfig = EvalConfig(every=100)
    chunk_steps: int | None = None
    # On CPU, stride-1 convolutions with at most 8 channels in and out on 16x16 maps or larger run as fused
    # multiply-adds (jaxkd.models.layers.direct_conv, the engine's CPU default): the default's resnet8 and resnet20
    # at widths 4-8, where XLA:CPU's convolution is slowest (benchmarks/RESULTS.md, method_sweep.py). False asks for
    # XLA's convolution (round-off only; no effect on wider models or other backends). Recorded in env.json and the
    # checkpoints' fingerprints.
    direct_conv: bool = True

    def __post_init__(self):
        check(self.n_seeds > 1, f"n_seeds must be at least 2 for paired tests, got {self.n_seeds}")
        check(self.classes is None or self.classes >= 2, f"classes must be at least 2 (or none), got {self.classes}")
        check(self.pairs, "pairs must name at least one teacher:student pair")
        for pair in self.pairs:
            check(pair.count(":") == 1, f"pair {pair!r} must read 'teacher:student', e.g. 'resnet32x4:resnet8x4'")
            for name in pair.split(":"):
                check(name in MODELS, f"pair {pair!r}: unknown model {name!r}")
        check(len(set(self.pairs)) == len(self.pairs), f"pairs repeat: {self.pairs}")
        check(
            not self.teacher_paths or len(self.teacher_paths) == len(self.pairs),
            f"teacher_paths must be empty or give one path per pair ({len(self.pairs)})",
        )
        check(self.methods and self.methods[0] == "ce", "methods must start with the baseline 'ce'")
        check(len(set(self.methods)) == len(self.methods), f"methods repeat a name: {self.methods}")
        for m in self.methods:
            check(m in self.objective.terms, f"method {m!r} has no term in the objective")
        check(0 <= self.ramp_fraction <= 1, f"ramp_fraction must lie in [0, 1], got {self.ramp_fraction}")
        self.ramps()
        check(self.kd_ce_weight >= 0, f"kd_ce_weight must be >= 0, got {self.kd_ce_weight}")
        check(
            len(self.init_stage) == 2 and min(self.init_stage) > 0,
            f"init_stage must be two positive ratios (init stage, rest), got {self.init_stage}",
        )
        self.check_chunks()
        for pair in self.pairs:
            self.run_configs(pair, steps_per_epoch=1)

    def ramps(self) -> dict[str, float]:
        """``{term: fraction of training its weight ramps over}`` from ``ramped`` (``name`` or ``name:fraction``)."""
        out = {}
        for entry in self.ramped:
            name, _, frac = entry.partition(":")
            check(name in self.objective.terms, f"ramped names {name!r}, which has no term in the objective")
            try:
                out[name] = float(frac) if frac else self.ramp_fraction
            except ValueError:
                raise ConfigError(f"ramped entry {entry!r}: the fraction after ':' must be a number") from None
            check(0 <= out[name] <= 1, f"ramped entry {entry!r}: the fraction must lie in [0, 1]")
        return out

    def models(self, pair: str) -> tuple[ModelConfig, ModelConfig]:
        t, s = pair.split(":")
        return (ModelConfig(t, self.teacher_widths, self.dtype), ModelConfig(s, self.student_widths, self.dtype))

    def run_configs(
        self, pair: str, *, steps_per_epoch: int, image_size: int = 32, num_train: int | None = None
    ) -> tuple[RunConfig, RunConfig]:
        """The teacher's and the students' RunConfig for ``pair``: :meth:`student_terms` with FT's init stage
        length and, when ``num_train`` (the training split's size) is given, CRD's memory size.
        """
        t_model, s_model = self.models(pair)
        terms = peer_terms.fill_run_sizes(
            self.student_terms(pair, steps_per_epoch=steps_per_epoch, image_size=image_size),
            num_train=num_train,
            total_steps=self.recipe.total_steps(steps_per_epoch),
            steps_per_epoch=steps_per_epoch,
            phases=self.init_stage,
        )
        teacher = RunConfig(model=t_model, recipe=self.teacher_recipe, data=self.data, eval=self.eval)
        student = RunConfig(
            model=s_model,
            objective=ObjectiveConfig(terms),
            recipe=self.recipe,
            data=self.data,
            eval=self.eval,
            teacher="live",
        )
        return teacher, student

    def student_terms(self, pair: str, *, steps_per_epoch: int, image_size: int = 32) -> dict:
        """The objective's terms of ``methods`` for ``pair``: feature names, the ramps, the init stage resolved."""
        t_model, s_model = self.models(pair)
        terms = {k: dict(v) for k, v in self.objective.terms.items() if k in self.methods}
        ramps = self.ramps()
        for name, opts in terms.items():
            kind = opts.get("kind", name)
            for side, model in (("student", s_model.name), ("teacher", t_model.name)):
                if opts.get(side) == "auto" and kind in _TAPS:
                    opts[side] = _TAPS[kind](model)
            paired = kind in ("at", "nst", "ab", "vid") and opts.get("student")
            if paired and len(opts["student"]) != len(opts["teacher"]):
                n = min(len(opts["student"]), len(opts["teacher"]))  # deepest stages of each
                opts["student"], opts["teacher"] = opts["student"][-n:], opts["teacher"][-n:]
            if kind == "at":
                opts["weight"] = opts.get("weight", 1.0) * (image_size / 32) ** 2
            frac = ramps.get(name, ramps.get(kind))  # by name, else by kind (a renamed DKD term ramps as DKD)
            if frac is not None and "ramp_steps" not in opts:
                opts["ramp_steps"] = int(round(frac * self.recipe.total_steps(steps_per_epoch)))
            if kind == "ft" and "init_scale" not in opts:
                # RepDistiller's init learning rate (0.01 for ResNet/WRN students, else the run's) over the run's
                lr = self.recipe.learning_rate
                init_lr = 0.01 if _RD_FT_INIT_LR_001.fullmatch(s_model.name) else lr
                opts["init_scale"] = init_lr / lr / opts.get("weight", 1.0)
        return peer_terms.init_stage_objective(terms, phases=self.init_stage)

    def conditions(self, objective: ObjectiveConfig) -> dict[str, dict[str, float]]:
        """Method -> grid point (its term plus CE; AB, FSP and FT take CE from ``ce_main``, after their init)."""
        conds = method_conditions(objective, self.methods, kd_ce_weight=self.kd_ce_weight)
        return peer_terms.init_stage_conditions(conds, objective.terms)


# Students whose FT paraphraser RepDistiller pre-trains at learning rate 0.01 (helper/pretrain.py), not the run's.
_RD_FT_INIT_LR_001 = re.compile(r"resnet(8|14|20|32|44|56|110)(x4)?|wrn_\d+_\d+")


def _family(name: str) -> str:
    return "vgg" if name.startswith("vgg") else "vit" if name.startswith("vit") else "resnet"


def _hint_stage(name: str) -> str:
    return "stage2"  # the middle of three (ResNets, WRNs), of stage0..4 (VGG), of a ViT's thirds


def _at_stages(name: str) -> tuple[str, ...]:
    if _family(name) == "vgg":
        return ("stage1", "stage2", "stage3", "stage4")  # RepDistiller: feat[1:-1]
    if name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        return ("stage1", "stage2", "stage3", "stage4")
    return ("stage1", "stage2", "stage3")


def _fsp_maps(name: str) -> tuple[str, ...]:
    """RepDistiller's ``feat[:-1]``: the first map (VGG's block 0, the others' stem) and the stages."""
    return ("stage0" if _family(name) == "vgg" else "stem", *_at_stages(name))


# Each feature term's taps as RepDistiller's CIFAR script reads them ("auto" in the objective).
_TAPS = {
    "fitnet": _hint_stage,
    "at": _at_stages,
    "nst": _at_stages,
    "vid": _at_stages,
    "sp": lambda name: _at_stages(name)[-1],  # feat[-2]: the last stage map
    "ft": lambda name: _at_stages(name)[-1],
    "fsp": _fsp_maps,
    "ab": lambda name: tuple(f"{s}_pre" for s in _at_stages(name)),  # preact=True
}


_p = dict(
    pairs=("resnet32x4:resnet8x4", "wrn_40_2:wrn_16_2", "vgg13:vgg8"),
    teacher_widths=None,
    student_widths=None,
    n_seeds=5,
    classes=None,
    data=DataConfig("tfds:cifar100", crop_padding=4, flip=True),
    teacher_recipe=_RD,
    recipe=_RD,
    ramped=("dkd",),
    ramp_fraction=20 / 240,
    eval=EvalConfig(every=None),
    methods=METHODS + PEER_METHODS,  # RepDistiller's whole table
)

_ADAM = RecipeConfig(optimizer="adam", learning_rate=3e-3, schedule="cosine", batch_size=128, steps=6000)

PRESETS = {
    "smoke": Config(
        n_seeds=2,
        teacher_widths=(4, 4, 4, 8),
        student_widths=(2, 2, 4, 4),
        teacher_recipe=RecipeConfig(optimizer="momentum", learning_rate=0.05, batch_size=32, steps=6),
        recipe=RecipeConfig(optimizer="momentum", learning_rate=0.05, batch_size=32, steps=6),
        eval=EvalConfig(every=3),
    ),
    "default": Config(),
    # The capacity check of docs/procedural.md: all 100 procedural16 classes, jaxkd's cnn2d at 107k parameters
    # (the teacher) against the same family at 30k (students trained from scratch with CE, and distilled with
    # KD), both with docs/procedural.md's Adam recipe for 6000 steps (85 epochs).
    "capacity": Config(
        pairs=("cnn2d:cnn2d",),
        teacher_widths=(32, 64, 128),
        student_widths=(16, 32, 64),
        classes=None,
        methods=("ce", "kd"),
        teacher_recipe=_ADAM,
        recipe=_ADAM,
        eval=EvalConfig(every=500),
    ),
    "paper": Config(**_p),
}


def run(config: Config, out_dir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Every pair: teacher (trained or loaded), then every method's students; writes results to ``out_dir``."""
    with direct_convolutions(config.direct_conv):
        return _run(config, out_dir, resume=resume, overwrite=overwrite, progress=progress)


def _run(config: Config, out_dir: str, *, resume: bool, overwrite: bool, progress: bool) -> dict:
    dataset = load_dataset(config.data.dataset)
    if config.classes is not None:
        check(
            config.classes <= dataset.num_classes,
            f"classes={config.classes} but {dataset.name} has {dataset.num_classes}",
        )
        dataset = dataset.subset_classes(range(config.classes))
    check(len(dataset.in_shape) == 3, f"cifar_kd needs [H, W, C] images; {dataset.name} has {dataset.in_shape}")
    n_train = round(len(dataset.y_train) * (1 - config.data.val_fraction))
    steps_per_epoch = -(-n_train // config.recipe.batch_size)
    sized = {}  # CRD's memory and FT's init stage need the run's own sizes: from a CE-only trainer of it
    plans = {}
    for i, pair in enumerate(config.pairs):  # every check before any training
        t_cfg, s_cfg = config.run_configs(pair, steps_per_epoch=steps_per_epoch, image_size=dataset.in_shape[0])
        if peer_terms.needs_run_sizes(config.student_terms(pair, steps_per_epoch=1)):
            n, _, per_epoch = peer_terms.run_sizes(s_cfg, dataset)
            size = {"steps_per_epoch": per_epoch, "image_size": dataset.in_shape[0], "num_train": n}
            t_cfg, s_cfg = config.run_configs(pair, **size)
            sized[pair] = size
        t_model, s_model = (
            make_model(m.name, dataset.in_shape, dataset.num_classes, m.widths, m.dtype)
            for m in (t_cfg.model, s_cfg.model)
        )
        check_objective(s_cfg, s_model, t_model)
        check_seeds_fit(s_cfg, dataset, config.n_seeds, len(config.methods))
        loaded = load_teacher(config.teacher_paths[i], t_model) if config.teacher_paths else None
        if loaded is not None:  # a teacher trained on other data (its normalisation) is refused before any training
            check_teacher_normalisation(loaded, dataset.mean, dataset.std, dataset.name)
        plans[pair] = (t_cfg, s_cfg, loaded)

    summary, rows = {"pairs": {}}, []
    key = jax.random.key(config.seed)
    for pair, (t_cfg, s_cfg, loaded) in plans.items():
        key, key_teacher, key_students = jax.random.split(key, 3)
        tag = pair.replace(":", "-")
        ckpt = (lambda name: f"{out_dir}/checkpoints/{tag}/{name}") if config.chunk_steps else (lambda name: None)  # noqa: B023
        if loaded is None:
            teacher, t_result = train_teacher(
                t_cfg,
                dataset,
                key_teacher,
                chunk_steps=config.chunk_steps,
                checkpoint_dir=ckpt("teacher"),
                fingerprint=FINGERPRINT,
                resume=resume,
                overwrite=overwrite,
                progress=progress,
            )
            save_teacher(
                os.path.join(out_dir, "teachers", tag),
                teacher,
                fingerprint=t_result.fingerprint,
                replace=overwrite,
                member={"model": "selected", "step": int(t_result.selected_steps[0, 0])},
            )
        else:
            teacher, t_result = loaded, None
        trainer = make_train(s_cfg, dataset, teacher)
        if pair in sized:
            size = {k: v for k, v in sized[pair].items() if k != "num_train"}
            requested = config.student_terms(pair, **size)
            peer_terms.check_run_sizes(requested, s_cfg.objective.terms, trainer, phases=config.init_stage)
        conds = config.conditions(s_cfg.objective)
        _, pair_rows, pair_summary = run_methods(
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
            desc=f"{pair} students",
        )
        if loaded is not None:
            pair_summary["teacher_path"] = config.teacher_paths[config.pairs.index(pair)]
        rows += [{"pair": pair, **r} for r in pair_rows]
        summary["pairs"][pair] = pair_summary
    figure = _figure(summary, dataset, config)
    write_outputs(out_dir, config=config, rows=rows, summary=summary, figures={"figure.png": figure})
    return summary


def _figure(summary, dataset, config) -> bytes:
    pairs = list(summary["pairs"])
    fig, axes = plotting.figure(ncols=len(pairs), width=4.2)
    for ax, pair in zip(axes[0], pairs):
        s = summary["pairs"][pair]
        names = list(s["conditions"])
        ref = s["teacher"]["test/acc"]["selected"]["mean"] if "teacher" in s else None
        plotting.points_with_ci(
            ax,
            names,
            [s["conditions"][n]["test/acc"]["selected"] for n in names],
            ylabel="test accuracy (mean, 95% CI over seeds)",
            reference=ref,
            reference_label="teacher",
        )
        ax.set_title(pair.replace(":", " → "), fontsize=9)
    fig.suptitle(
        f"{dataset.name} {'x'.join(map(str, dataset.in_shape))}, {config.n_seeds} paired seeds per method; "
        "checkpoint chosen on validation",
        fontsize=8,
    )
    return plotting.to_png(fig)


def runlocal(config: Config) -> Config:
    """Any preset shrunk to a CPU smoke run: resnet8 → resnet8 at tiny widths on procedural16's first 10 classes.

    The teacher is resnet8 rather than the default's resnet20: the same code paths (stage features, a live
    teacher, every method) with fewer layers to compile (the smoke preset: 27 s → 21 s).

    The paper pairs' feature wiring is checked without training by
    ``Config.run_configs`` + ``check_objective`` (tests/test_cifar_kd.py). FSP compares flow matrices
    channel by channel, so a preset that runs it is shrunk to a student as wide as its teacher.
    """
    small = RecipeConfig(optimizer="momentum", learning_rate=0.05, batch_size=16, steps=4)
    teacher_widths = (4, 4, 4, 8)
    return dataclasses.replace(
        config,
        n_seeds=2,
        pairs=("resnet8:resnet8",),
        classes=10,
        teacher_widths=teacher_widths,
        student_widths=teacher_widths if "fsp" in config.methods else (2, 2, 4, 4),
        data=DataConfig("procedural16", crop_padding=2),
        teacher_recipe=small,
        recipe=small,
        eval=EvalConfig(every=2),
        teacher_paths=(),
        chunk_steps=2 if config.chunk_steps else None,
    )
