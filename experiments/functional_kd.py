"""Does KD transfer knowledge? Self-distillation against exact controls, measured functionally.

For each setup (dataset × architecture; teacher and student share the
architecture) ``n_seeds`` teachers are trained in one program; student seed s
is paired with teacher s. Then ONE student program per setup trains every
condition as a grid point, with explicit initialisation and data-order keys
(:class:`jaxkd.sweep.RunKeys`):

- ``base``: own init, own data order, CE only;
- ``siddo``: the teacher's initialisation, own data order, CE only;
- ``disdo``: own initialisation, the teacher's data order, CE only;
- ``kd_a{α}_T{T}``: (1 − α)·CE + α·T²·KL(softmax(t/T) ‖ softmax(s/T)) for every (α, T) of the grid;
- ``rcd_fixed`` / ``rcd_step``: the same loss at (``rcd_alpha``, ``rcd_temperature``)
  with the teacher's logits replaced by N(0, ``rcd_scale``²) noise, fixed per
  training example / resampled every step (``jaxkd.terms.rcd``);
- ``rcd_untrained``: the same loss towards an untrained, randomly initialised
  network of the same architecture, drawn per run from the run's own key and
  held in the term's state (``jaxkd.terms.untrained``), so it is a grid point
  of the same program (one untrained teacher per seed, seeds paired with base).

Controls are skipped at the grid points that do not use them (weight 0:
``Term.skip_unweighted``), so they cost nothing there on a CPU.

Every student is then compared with its own (trained) teacher on the test set
(``jaxkd.metrics.functional_metrics``: accuracy, loss, agreement, activation
distance, JS, cosine, MI; overall and on the teacher-correct / teacher-incorrect
subsets, copy-the-error vs other errors), at each run's validation-selected model. Tests: per setup
and per metric, one declared family — every condition vs ``base``, every KD
point vs each RCD condition and vs ``siddo`` — Holm-corrected within the
family (paired over seeds by default: seed s of every condition distils from,
or is compared with, teacher s and shares its own keys). The asymmetric payoff
(docs/functional.md) of each KD point and each RCD condition vs ``base`` and
vs ``siddo``.

Command::

    jaxkd run functional_kd --preset default --out results/functional_kd/default

Presets: ``smoke`` (seconds), ``default`` (digits + cnn2d, digits + mlp,
mnist1d + cnn1d, 10 seeds, offline on a 2-core CPU: see the measured
runtime and results below), ``paper`` (CIFAR-10 with ``resnet18``, ``vgg19``,
``vit_small``, 100 epochs of SGD; prepare the data first with
``jaxkd data prepare cifar10``; for an accelerator, not run here).

Output: config.json, records.csv (one row per setup × condition × seed ×
metric, with ``init_seed``/``data_seed`` saying whose keys the run used, e.g.
``student:3`` / ``teacher:3``), summary.json (teacher accuracy; mean ± std
and 95% CI per condition and metric; the test family; the payoffs),
figure.png (metrics by condition with 95% CIs), payoff.png (relative gain on
teacher-correct vs teacher-incorrect examples, per condition, vs base), env.json.

Measured (default preset, 2026-11-24, idle 2-core CPU): 208 s wall (3.5 min), 6.1 min CPU;
6 compiled training sweeps (per setup: teachers; every condition's students), 270 training
runs, 1.3 runs per second of wall time, compiles included.

What it shows (10 seeds, validation-selected models, paired tests Holm-corrected within each
setup × metric): how much more a KD student agrees with its teacher than the
controls do, overall and on the teacher's errors (copying them), and the
asymmetric payoff. The measured tables are in docs/functional_kd.md and the
summary in the README ("Does KD transfer knowledge"), regenerated from this
preset's summary.json by ``make numbers``. Digits teachers err on only a few
test examples, so the copy-error numbers there are coarse.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd import outputs, plotting, stats
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig
from jaxkd.data import load_dataset
from jaxkd.errors import check, check_name
from jaxkd.experiment import check_seeds_fit, label_tests, train_teacher
from jaxkd.keys import RunKeys, seed_run_keys
from jaxkd.metrics import asymmetric_payoff, functional_metrics_over_seeds
from jaxkd.outputs import write_outputs
from jaxkd.recipes import RecipeConfig
from jaxkd.sweep import run_sweep
from jaxkd.train import make_train

CONDITIONS = ("base", "siddo", "disdo", "kd", "rcd_fixed", "rcd_step", "rcd_untrained")
CE_ONLY = ("base", "siddo", "disdo")
RCD = ("rcd_fixed", "rcd_step", "rcd_untrained")
SUBSETS = ("all", "teacher_correct", "teacher_incorrect")
_PER_SUBSET = ("acc", "loss", "agreement", "activation_distance", "js", "cosine", "mi", "n")
METRICS = tuple(f"{s}/{m}" for s in SUBSETS for m in _PER_SUBSET) + (
    "all/teacher_acc",
    "teacher_incorrect/copy_error",
    "teacher_incorrect/other_error",
    "teacher_incorrect/correct",
    "teacher_incorrect/n_copy_error",
    "teacher_incorrect/n_other_error",
    "teacher_incorrect/n_correct",
)
PLOT_METRICS = ("all/acc", "all/agreement", "all/js", "teacher_correct/agreement", "teacher_incorrect/copy_error")

FINGERPRINT = {"experiment": "functional_kd"}  # in every checkpoint: resuming another experiment is refused


@dataclasses.dataclass(frozen=True)
class Setup:
    """One dataset × architecture; teacher and students share ``model`` and ``recipe`` (self-distillation)."""

    data: DataConfig
    model: ModelConfig
    recipe: RecipeConfig

    @property
    def name(self) -> str:
        return f"{self.data.dataset}:{self.model.name}"


def kd_name(alpha: float, temperature: float) -> str:
    return f"kd_a{alpha:g}_T{temperature:g}"


def _parse_comparison(text: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(":")]
    check(len(parts) == 2 and all(parts), f"comparison {text!r} must read 'condition:control', e.g. 'kd_a0.9_T4:base'")
    return parts[0], parts[1]


@dataclasses.dataclass(frozen=True)
class Config:
    n_seeds: int = 10
    seed: int = 0
    setups: tuple[Setup, ...] = ()
    conditions: tuple[str, ...] = CONDITIONS
    kd_alphas: tuple[float, ...] = (0.5, 0.9)
    kd_temperatures: tuple[float, ...] = (4.0,)
    rcd_alpha: float = 0.9  # the RCD conditions control the KD point at (rcd_alpha, rcd_temperature)
    rcd_temperature: float = 4.0
    rcd_scale: float = 1.0  # std of the random logits
    # The family of comparisons as "condition:control"; None = every condition vs base, every KD point vs
    # each RCD condition and vs siddo. Holm-corrected within (setup, metric).
    comparisons: tuple[str, ...] | None = None
    test_metrics: tuple[str, ...] = (
        "all/acc",
        "all/agreement",
        "all/js",
        "all/activation_distance",
        "teacher_correct/agreement",
        "teacher_incorrect/agreement",
        "teacher_incorrect/other_error",
    )
    test: str = "paired"
    eval: EvalConfig = EvalConfig(every=100)
    chunk_steps: int | None = None

    def __post_init__(self):
        check(
            isinstance(self.n_seeds, int) and self.n_seeds >= 2,
            f"n_seeds must be an integer >= 2 (tests over seeds), got {self.n_seeds}",
        )
        check(len(self.setups) > 0, "no setups: give at least one dataset × model")
        names = [s.name for s in self.setups]
        check(len(set(names)) == len(names), f"setups repeat a dataset:model pair: {names}")
        for c in self.conditions:
            check_name("condition", c, CONDITIONS)
        check(len(set(self.conditions)) == len(self.conditions), f"conditions repeat a name: {self.conditions}")
        check("base" in self.conditions, "the conditions must include 'base', the control of every comparison")
        for a in (*self.kd_alphas, self.rcd_alpha):
            check(0.0 <= a <= 1.0, f"alpha must lie in [0, 1], got {a}")
        for t in (*self.kd_temperatures, self.rcd_temperature):
            check(t > 0, f"temperature must be positive, got {t}")
        check(self.rcd_scale >= 0, f"rcd_scale must be >= 0, got {self.rcd_scale}")
        if "kd" in self.conditions:
            check(self.kd_alphas and self.kd_temperatures, "the kd condition needs kd_alphas and kd_temperatures")
        check_name("test", self.test, stats.FAMILY_TESTS)
        for m in self.test_metrics:
            check_name("metric", m, self.metric_names())
        check(len(self.test_metrics) > 0, "test_metrics is empty: name at least one metric to test")
        names = self.condition_names()
        family = self.family()
        check(
            len(family) > 0,
            "empty family of comparisons: the conditions give nothing to compare with base; "
            "add a condition or list comparisons as 'condition:control'",
        )
        for a, b in family:
            for c in (a, b):
                check(
                    c in names,
                    f"comparison {a}:{b} names {c!r}, which is not a condition here; conditions: {', '.join(names)}",
                )
            check(a != b, f"comparison {a}:{b} compares a condition with itself")
        check(self.chunk_steps is None or self.chunk_steps > 0, f"chunk_steps must be positive, got {self.chunk_steps}")
        for s in self.setups:
            self.student_config(s), self.teacher_config(s)
            check(
                self.chunk_steps is None
                or (
                    s.recipe.steps is not None
                    and s.recipe.steps % self.chunk_steps == 0
                    and self.chunk_steps % (self.eval.every or 1) == 0
                ),
                f"chunk_steps ({self.chunk_steps}) must divide the {s.name} run's steps and be a multiple of "
                "eval.every",
            )

    def metric_names(self) -> tuple[str, ...]:
        """Every metric a run records (and so may test)."""
        return METRICS

    # --- conditions and their grid points ------------------------------------------------------------
    def kd_points(self) -> list[tuple[float, float]]:
        if "kd" not in self.conditions:
            return []
        return [(float(a), float(t)) for a in self.kd_alphas for t in self.kd_temperatures]

    def program_conditions(self) -> list[str]:
        """Conditions trained as grid points of the student program, in grid order (every condition)."""
        out = []
        for c in self.conditions:
            out += [kd_name(a, t) for a, t in self.kd_points()] if c == "kd" else [c]
        return out

    def condition_names(self) -> list[str]:
        return self.program_conditions()

    def family(self) -> list[tuple[str, str]]:
        """The declared comparisons ``(condition, control)``."""
        if self.comparisons is not None:
            return [_parse_comparison(c) for c in self.comparisons]
        names = self.condition_names()
        kds = [kd_name(a, t) for a, t in self.kd_points()]
        rcds = [c for c in names if c.startswith("rcd")]
        out = [(c, "base") for c in names if c != "base"]
        out += [(k, r) for k in kds for r in rcds]
        out += [(k, "siddo") for k in kds if "siddo" in names]
        return out

    def legend(self) -> dict[str, dict]:
        """Each condition's loss and keys, as written in the summary."""
        out = {
            "base": {"loss": "CE", "init": "student", "data": "student"},
            "siddo": {"loss": "CE", "init": "teacher", "data": "student"},
            "disdo": {"loss": "CE", "init": "student", "data": "teacher"},
        }
        for a, t in self.kd_points():
            out[kd_name(a, t)] = {
                "loss": f"{1 - a:g}·CE + {a:g}·T²·KL(teacher ‖ student), T={t:g}",
                "init": "student",
                "data": "student",
                "alpha": a,
                "temperature": t,
            }
        a, t = self.rcd_alpha, self.rcd_temperature
        for c, target in (
            ("rcd_fixed", f"softmax(N(0,{self.rcd_scale:g}²)/T), fixed per example"),
            ("rcd_step", f"softmax(N(0,{self.rcd_scale:g}²)/T), resampled every step"),
            ("rcd_untrained", "an untrained teacher of the same architecture (one per seed)"),
        ):
            out[c] = {
                "loss": f"{1 - a:g}·CE + {a:g}·T²·KL(target ‖ student), T={t:g}; target: {target}",
                "init": "student",
                "data": "student",
                "alpha": a,
                "temperature": t,
            }
        return {n: out[n] for n in self.condition_names()}

    def objective(self, setup: Setup | None = None, in_shape: tuple[int, ...] | None = None) -> ObjectiveConfig:
        """The student program's terms. ``rcd_untrained`` (an untrained copy of the setup's model, per run, in
        the term's state: ``jaxkd.terms.untrained``) needs the data's input shape, so it is included only when
        ``setup`` and ``in_shape`` are given (at run time; validation builds the rest)."""
        terms = {"ce": {"weight": 1.0}, "kd": {"weight": 0.0, "temperature": 4.0}}
        if "rcd_fixed" in self.conditions:
            terms["rcd_fixed"] = {"kind": "rcd", "weight": 0.0, "per_example": True, "scale": self.rcd_scale}
        if "rcd_step" in self.conditions:
            terms["rcd_step"] = {"kind": "rcd", "weight": 0.0, "per_example": False, "scale": self.rcd_scale}
        if "rcd_untrained" in self.conditions and setup is not None and in_shape is not None:
            terms["rcd_untrained"] = {
                "kind": "untrained",
                "weight": 0.0,
                "model": setup.model.name,
                "widths": setup.model.widths,
                "dtype": setup.model.dtype,
                "in_shape": tuple(in_shape),
            }
        return ObjectiveConfig(terms)

    def grid(self) -> dict[str, list[float]]:
        """The student program's grid ``{hparam: [G]}``, one point per :meth:`program_conditions` entry."""
        rcds = [r for r in RCD if r in self.conditions]
        points = []
        for c in self.program_conditions():
            p = {"ce.weight": 1.0, "kd.weight": 0.0, "kd.temperature": self.rcd_temperature}
            p |= {f"{r}.weight": 0.0 for r in rcds} | {f"{r}.temperature": self.rcd_temperature for r in rcds}
            if c.startswith("kd_"):
                a, t = next((a, t) for a, t in self.kd_points() if kd_name(a, t) == c)
                p |= {"ce.weight": 1.0 - a, "kd.weight": a, "kd.temperature": t}
            elif c in RCD:
                p |= {"ce.weight": 1.0 - self.rcd_alpha, f"{c}.weight": self.rcd_alpha}
            points.append(p)
        return {k: [p[k] for p in points] for k in points[0]}

    def run_keys(self, teacher_key, student_key) -> RunKeys:
        """Init and data-order keys ``[S, G]`` of the main program: SIDDO takes the teacher's init keys,
        DISDO its data keys; every other point its own (seed s's, shared across points)."""
        names = self.program_conditions()
        teacher = seed_run_keys(teacher_key, self.n_seeds)
        keys = seed_run_keys(student_key, self.n_seeds, len(names))
        if "siddo" in names:
            keys = keys.select([names.index("siddo")], teacher, init=True)
        if "disdo" in names:
            keys = keys.select([names.index("disdo")], teacher, data=True)
        return keys

    def teacher_config(self, s: Setup) -> RunConfig:
        return RunConfig(model=s.model, recipe=s.recipe, data=s.data, eval=self.eval)

    def student_config(self, s: Setup, in_shape: tuple[int, ...] | None = None) -> RunConfig:
        return RunConfig(
            model=s.model, objective=self.objective(s, in_shape), recipe=s.recipe, data=s.data, eval=self.eval
        )

    def keys(self, setup_index: int) -> dict:
        """The setup's keys: teachers and students. (The third split was the untrained teachers' key when they
        were a separate program; kept so that the teacher and student keys stay what they were.)"""
        k_t, k_s, _ = jax.random.split(jax.random.fold_in(jax.random.key(self.seed), setup_index), 3)
        return {"teacher": k_t, "student": k_s}


_DIGITS = DataConfig("digits", val_fraction=0.1)
_MNIST1D = DataConfig("mnist1d", val_fraction=0.1)
_SMALL = RecipeConfig(learning_rate=3e-3, batch_size=64, steps=300)
DEFAULT_SETUPS = (
    Setup(_DIGITS, ModelConfig("cnn2d", (16, 32)), _SMALL),
    Setup(_DIGITS, ModelConfig("mlp", (128, 128)), _SMALL),
    Setup(_MNIST1D, ModelConfig("cnn1d", (16, 32)), RecipeConfig(learning_rate=3e-3, batch_size=64, steps=600)),
)
# CIFAR-10 at the authors' sister-repo recipe (papers.md §2.3): SGD 1e-2, momentum 0.9, wd 5e-4, batch 128,
# 100 epochs, crop 4 + flip (the teacher then runs live on the student's augmented batch).
_CIFAR = DataConfig("tfds:cifar10", val_fraction=0.1, crop_padding=4, flip=True)
_SGD = RecipeConfig(
    optimizer="momentum",
    learning_rate=1e-2,
    momentum=0.9,
    weight_decay=5e-4,
    batch_size=128,
    steps=None,
    epochs=100,
    schedule="cosine",
)
PRESETS = {
    "smoke": Config(
        n_seeds=2,
        setups=(Setup(_DIGITS, ModelConfig("cnn2d", (4, 8)), RecipeConfig(steps=20)),),
        eval=EvalConfig(every=10),
    ),
    "default": Config(setups=DEFAULT_SETUPS),
    "paper": Config(
        setups=tuple(Setup(_CIFAR, ModelConfig(m), _SGD) for m in ("resnet18", "vgg19", "vit_small")),
        kd_alphas=(0.1, 0.5, 0.9),
        kd_temperatures=(1.0, 4.0),
        eval=EvalConfig(every=None),
    ),
}


def runlocal(config: Config) -> Config:
    """Any preset shrunk to a CPU smoke run: one tiny offline setup (digits, a one-layer MLP), 4 steps, 2 seeds.

    One setup, because every program's first compile (initialisation included) costs seconds on a CPU.
    """
    setup = Setup(_DIGITS, ModelConfig("mlp", (8,)), RecipeConfig(batch_size=32, steps=4))
    return dataclasses.replace(
        config, n_seeds=2, setups=(setup,), eval=EvalConfig(every=2), chunk_steps=2 if config.chunk_steps else None
    )


# --- running -------------------------------------------------------------------------------------


def student_test_logits(result, trainer) -> np.ndarray:
    """Eval-mode test logits ``[S, G, N, C]`` of every student's validation-selected model."""
    fn = lambda p, r: trainer.predict_split({"model": p}, r, trainer.data, "test")  # noqa: E731
    return np.asarray(jax.jit(jax.vmap(jax.vmap(fn)))(*result.model("selected")))


def _metrics_by_condition(logits_SxGxNxC, diverged_SxG, teacher_logits, labels, names) -> dict:
    """``{condition: {metric: [S] numpy}}``; a diverged run's values are NaN."""
    out = {}
    for g, name in enumerate(names):
        m = jax.jit(functional_metrics_over_seeds)(jnp.asarray(logits_SxGxNxC[:, g]), teacher_logits, labels)
        bad = diverged_SxG[:, g]
        out[name] = {k: np.where(bad, np.nan, np.asarray(v, np.float64)) for k, v in m.items()}
    return out


def run_setup(
    config: Config, index: int, *, out_dir: str | None = None, resume=False, overwrite=False, progress=True, probe=None
) -> dict:
    """Train one setup's teachers and students; return per-seed metrics, records and the runs' keys.

    ``probe`` (used by ``backdoor_kd``) changes the teacher's training set and adds metrics: an object
    with ``teacher_dataset(dataset) -> Dataset`` and ``metrics(trainer, params, rest) -> {name: scalar}``
    for one model (``params`` as a student's, ``{"model": ...}``), evaluated on every teacher and student.
    """
    setup = config.setups[index]
    dataset = load_dataset(setup.data.dataset)
    keys = config.keys(index)
    ckpt = (
        (lambda name: f"{out_dir}/checkpoints/{index}_{name}")
        if config.chunk_steps and out_dir
        else (lambda name: None)
    )
    common = dict(chunk_steps=config.chunk_steps, resume=resume, overwrite=overwrite, progress=progress)
    n = config.n_seeds
    t_data = dataset if probe is None else probe.teacher_dataset(dataset)
    check_seeds_fit(config.student_config(setup, dataset.in_shape), dataset, n, len(config.program_conditions()))
    teacher, t_result = train_teacher(
        config.teacher_config(setup),
        t_data,
        keys["teacher"],
        n_seeds=n,
        per_seed=True,
        checkpoint_dir=ckpt("teacher"),
        fingerprint=FINGERPRINT,
        **common,
    )
    trainer = make_train(config.student_config(setup, dataset.in_shape), dataset, teacher)
    names = config.program_conditions()
    result = run_sweep(
        trainer,
        keys["student"],
        n,
        config.grid(),
        keys=config.run_keys(keys["teacher"], keys["student"]),
        checkpoint_dir=ckpt("students"),
        fingerprint=FINGERPRINT,
        desc=f"{setup.name} students",
        **common,
    )
    t_logits = trainer.teacher_inputs["logits"]["test"]  # [S, N, C], eval mode
    labels = trainer.data["y_test"]
    per_seed = _metrics_by_condition(student_test_logits(result, trainer), result.diverged, t_logits, labels, names)
    teacher_acc = np.asarray(jnp.mean(jnp.argmax(t_logits, -1) == labels[None], axis=-1), np.float64)
    teacher_metrics = {"all/acc": teacher_acc}
    if probe is not None:
        fn = lambda p, r: probe.metrics(trainer, p, r)  # noqa: E731
        params, rest = result.model("selected")
        extra = jax.jit(jax.vmap(jax.vmap(lambda p, r: fn({"model": p}, r))))(params, rest)  # [S, G]
        for g, name in enumerate(names):
            per_seed[name] |= {
                k: np.where(result.diverged[:, g], np.nan, np.asarray(v[:, g], np.float64)) for k, v in extra.items()
            }
        t_extra = jax.jit(jax.vmap(lambda p, r: fn({"model": p}, r)))(teacher.params, teacher.rest)
        teacher_metrics |= {k: np.asarray(v, np.float64) for k, v in t_extra.items()}
    programs = 2  # the teachers' sweep and the students' (every condition a grid point)
    diverged = {n: result.diverged[:, g] for g, n in enumerate(names)}
    return {
        "setup": setup,
        "per_seed": per_seed,
        "teacher_acc": teacher_acc,
        "teacher": teacher_metrics,
        "data_hashes": {"teacher": t_data.content_hash(), "students": dataset.content_hash()},
        "programs": programs,
        "records": _records(config, setup, per_seed, teacher_metrics, diverged, trainer.steps),
    }


def _whose(condition: str, s: int) -> tuple[str, str]:
    init = "teacher" if condition == "siddo" else "student"
    data = "teacher" if condition == "disdo" else "student"
    return f"{init}:{s}", f"{data}:{s}"


def _records(config: Config, setup: Setup, per_seed: dict, teacher: dict, diverged: dict, step: int) -> list[dict]:
    legend = config.legend()
    rows = []
    base = {"setup": setup.name, "dataset": setup.data.dataset, "model": setup.model.name, "step": int(step)}
    for metric, values in teacher.items():
        for s, v in enumerate(values):
            rows.append(
                {
                    **base,
                    "condition": "teacher",
                    "seed": s,
                    "init_seed": f"teacher:{s}",
                    "data_seed": f"teacher:{s}",
                    "alpha": "",
                    "temperature": "",
                    "metric": metric,
                    "value": float(v),
                    "diverged": False,
                }
            )
    for cond, metrics in per_seed.items():
        a, t = legend[cond].get("alpha", ""), legend[cond].get("temperature", "")
        for metric in sorted(metrics):
            for s, v in enumerate(metrics[metric]):
                init, data = _whose(cond, s)
                rows.append(
                    {
                        **base,
                        "condition": cond,
                        "seed": s,
                        "init_seed": init,
                        "data_seed": data,
                        "alpha": a,
                        "temperature": t,
                        "metric": metric,
                        "value": float(v),
                        "diverged": bool(diverged[cond][s]),
                    }
                )
    return rows


def analyse(config: Config, per_seed: dict, teacher: dict) -> dict:
    """Summaries, the test family and the payoffs of one setup from ``{condition: {metric: [S]}}``
    (``teacher``: ``{metric: [S]}`` of the teachers)."""
    paired = stats.FAMILY_TESTS[config.test]
    summary = {
        "teacher": {k: stats.summarize(v) for k, v in teacher.items()},
        "conditions": {c: {k: stats.summarize(v) for k, v in m.items()} for c, m in per_seed.items()},
    }
    family = config.family()
    summary["tests"] = {
        metric: label_tests(
            stats.compare_family(
                {f"{a} - {b}": (per_seed[a][metric], per_seed[b][metric]) for a, b in family}, test=config.test
            ),
            metric,
        )
        for metric in config.test_metrics
    }
    payoff = {}
    controls = [c for c in ("base", "siddo") if c in per_seed]
    for cond in per_seed:
        if cond.startswith(("kd_", "rcd")):
            for ctl in controls:
                payoff[f"{cond} vs {ctl}"] = asymmetric_payoff(
                    per_seed[cond], per_seed[ctl], paired=paired, n_resamples=1000
                )
    summary["payoff"] = payoff
    return summary


def run(config: Config, out_dir: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Every setup: teachers, the student program(s), metrics, tests, payoffs; writes ``out_dir``."""
    outputs.check_writable(out_dir)  # fail before any training
    rows, summary, runs = [], {}, []
    for i in range(len(config.setups)):
        r = run_setup(config, i, out_dir=out_dir, resume=resume, overwrite=overwrite, progress=progress)
        runs.append(r)
        rows += r["records"]
        summary[r["setup"].name] = {"programs": r["programs"], **analyse(config, r["per_seed"], r["teacher"])}
    out = {
        "setups": summary,
        "legend": config.legend(),
        "family": {
            "comparisons": [f"{a} - {b}" for a, b in config.family()],
            "test": config.test,
            "correction": "Holm within each (setup, metric)",
            "metrics": list(config.test_metrics),
        },
        "when": "validation-selected models; student s vs its own teacher s on the test set",
        "compiled_programs": sum(r["programs"] for r in runs),
    }  # training sweeps
    figures = {"figure.png": _metric_figure(config, out), "payoff.png": _payoff_figure(config, out)}
    write_outputs(out_dir, config=config, rows=rows, summary=out, figures=figures)
    return out


# --- figures -------------------------------------------------------------------------------------


def _metric_figure(
    config: Config,
    summary: dict,
    metrics=PLOT_METRICS,
    teacher_label: str = "teacher",
    title: str = "student vs its own teacher, test set, validation-selected models",
) -> bytes:
    """One panel per setup × metric: each condition's mean and 95% CI, the teacher's mean as a line where the
    run records that metric for the teachers."""
    setups = list(summary["setups"])
    fig, axes = plotting.figure(ncols=len(metrics), nrows=len(setups), width=3.3, height=2.8)
    for i, name in enumerate(setups):
        s = summary["setups"][name]
        conds = list(s["conditions"])
        for j, metric in enumerate(metrics):
            ref = s["teacher"].get(metric, {}).get("mean")
            plotting.points_with_ci(
                axes[i, j],
                conds,
                [s["conditions"][c][metric] for c in conds],
                ylabel=metric,
                reference=ref,
                reference_label=teacher_label if ref is not None else None,
            )
            axes[i, j].set_title(name, fontsize=8)
    fig.suptitle(f"{title}; mean and 95% CI over {config.n_seeds} seeds", fontsize=9)
    return plotting.to_png(fig)


def _payoff_figure(config: Config, summary: dict) -> bytes:
    setups = list(summary["setups"])
    fig, axes = plotting.figure(ncols=len(setups), width=3.8, height=3.6)
    for i, name in enumerate(setups):
        ax = axes[0, i]
        pay = summary["setups"][name]["payoff"]
        for j, (label, p) in enumerate((k, v) for k, v in pay.items() if k.endswith(" vs base")):
            x, y = p["teacher_correct/relative_gain"], p["teacher_incorrect/relative_gain"]
            xe = [
                [max(x - p["teacher_correct/relative_gain_ci_low"], 0)],
                [max(p["teacher_correct/relative_gain_ci_high"] - x, 0)],
            ]
            ye = [
                [max(y - p["teacher_incorrect/relative_gain_ci_low"], 0)],
                [max(p["teacher_incorrect/relative_gain_ci_high"] - y, 0)],
            ]
            ax.errorbar(
                [x],
                [y],
                xerr=np.nan_to_num(xe),
                yerr=np.nan_to_num(ye),
                fmt="o",
                color=f"C{j}",
                capsize=2,
                label=label.removesuffix(" vs base"),
            )
        lim = ax.get_xlim() + ax.get_ylim()
        lo, hi = min(lim), max(lim)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        # Linear within ±1 (KD's range), logarithmic beyond: controls that lose accuracy have gains far below -1.
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.axhline(0, color="gray", lw=0.5)
        ax.axvline(0, color="gray", lw=0.5)
        ax.set_xlabel("relative gain in agreement, teacher correct")
        ax.set_ylabel("relative gain in copying, teacher incorrect")
        ax.set_title(f"{name} (vs base)", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle("asymmetric payoff: above the diagonal = errors copied relatively more (95% bootstrap CI)", fontsize=9)
    return plotting.to_png(fig)
